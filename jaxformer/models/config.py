"""Deprecated: import from jaxformer.models.decoder; kept for one release."""

from jaxformer.models.decoder.config import NORMS, POSITIONS, DecoderConfig

__all__ = ["NORMS", "POSITIONS", "DecoderConfig"]
