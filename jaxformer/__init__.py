"""jaxformer: transformer models in JAX/Flax NNX, with training, generation and scale-out.

`import jaxformer` (and `jaxformer.nn`, `jaxformer.models`) needs only jax, flax, optax and numpy;
the presets (omegaconf), the HF importer (safetensors) and the training stack load when first used.
"""

import importlib

from jaxformer.models import (DecoderConfig, DecoderLM, ModelOutput, build_model, get_family,
                              register_family)

__version__ = "0.1.0"
__all__ = ["interop", "DecoderConfig", "DecoderLM", "ModelOutput", "build_model", "count_params",
           "get_family", "load_model_config", "register_family"]

_LAZY = {"interop": ("jaxformer.interop", None),
         "count_params": ("jaxformer.presets", "count_params"),
         "load_model_config": ("jaxformer.presets", "load_model_config")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxformer' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
