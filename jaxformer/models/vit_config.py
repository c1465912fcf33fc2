"""Deprecated: import from jaxformer.models.vit; kept for one release."""

from jaxformer.models.vit.config import POOLER_ACTIVATIONS, ViTConfig

__all__ = ["POOLER_ACTIVATIONS", "ViTConfig"]
