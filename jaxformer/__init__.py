"""jaxformer: transformer models in JAX/Flax NNX, with training, generation and scale-out.

`import jaxformer` (and `jaxformer.nn`, `jaxformer.models`) needs only jax, flax, optax and numpy;
the presets (omegaconf), the HF importer (safetensors) and the training stack load when first used.
"""

import importlib

from jaxformer import models
from jaxformer.models import *  # noqa: F403 -- every family's config and module, the registry

__version__ = "0.1.0"
__all__ = ["interop", "hf", "count_params", "load_model_config", "quantize", *models.__all__]

_LAZY = {"interop": ("jaxformer.interop", None),
         "hf": ("jaxformer.interop.hf", None),  # `from jaxformer import hf; hf.load(...)`
         "count_params": ("jaxformer.presets", "count_params"),
         "load_model_config": ("jaxformer.presets", "load_model_config"),
         "quantize": ("jaxformer.quantization", "quantize")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxformer' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
