"""jaxformer: transformer models in JAX/Flax NNX, with training, generation and scale-out."""

from jaxformer import interop
from jaxformer.models import (DecoderConfig, DecoderLM, ModelOutput, build_model, get_family,
                              register_family)
from jaxformer.presets import count_params, load_model_config
from jaxformer.quantization import quantize

__version__ = "0.1.0"
__all__ = ["interop", "DecoderConfig", "DecoderLM", "ModelOutput", "build_model", "count_params",
           "get_family", "load_model_config", "quantize", "register_family"]
