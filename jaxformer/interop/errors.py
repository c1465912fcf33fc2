"""What can be wrong with a checkpoint handed to the importer. Each message names the file or
tensor at fault and, where there is one, the fix. All are `UserError`s: the CLI prints one line."""

from jaxformer.errors import UserError


class CheckpointError(UserError):
    """A checkpoint directory cannot be read into (or written from) a jaxformer model."""


class UnsafeCheckpointError(CheckpointError):
    """Only pickled weights (pytorch_model.bin, .pt, .ckpt): loading them would execute code."""


class UnsupportedArchitectureError(CheckpointError):
    """config.json names a model class that has no weight table here."""


class UnsupportedConfigError(CheckpointError):
    """A config setting that DecoderConfig cannot express (so the logits would differ)."""


class MissingTensorError(CheckpointError):
    """A tensor the architecture needs is not in the safetensors files."""


class ShapeMismatchError(CheckpointError):
    """A tensor's shape disagrees with the one config.json implies."""


class UnexpectedTensorError(CheckpointError):
    """The safetensors files hold tensors the architecture does not use."""
