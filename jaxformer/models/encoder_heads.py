"""Deprecated: import from jaxformer.models.encoder.heads; kept for one release."""

from jaxformer.models.encoder.heads import MaskedLMHead, Pooler, dense, gather_positions

__all__ = ["MaskedLMHead", "Pooler", "dense", "gather_positions"]
