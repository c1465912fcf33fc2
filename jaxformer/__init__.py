"""jaxformer: transformer models in JAX/Flax NNX, with training, generation and scale-out."""

from jaxformer import interop
from jaxformer.models import DecoderConfig, DecoderLM
from jaxformer.presets import count_params, load_model_config

__version__ = "0.1.0"
__all__ = ["interop", "DecoderConfig", "DecoderLM", "count_params", "load_model_config"]
