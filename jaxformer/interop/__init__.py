"""Moving weights between jaxformer and other libraries: HuggingFace safetensors checkpoints
(`jaxformer.interop.hf.load` / `save`)."""

from jaxformer.interop import hf
from jaxformer.interop.errors import (CheckpointError, MissingTensorError, ShapeMismatchError,
                                      UnexpectedTensorError, UnsafeCheckpointError,
                                      UnsupportedArchitectureError, UnsupportedConfigError)

__all__ = [
    "CheckpointError", "MissingTensorError", "ShapeMismatchError", "UnexpectedTensorError",
    "UnsafeCheckpointError", "UnsupportedArchitectureError", "UnsupportedConfigError", "hf",
]
