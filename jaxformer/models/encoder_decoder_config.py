"""Deprecated: import from jaxformer.models.encoder_decoder; kept for one release."""

from jaxformer.models.encoder_decoder.config import INITS, POSITIONS, EncoderDecoderConfig

__all__ = ["INITS", "POSITIONS", "EncoderDecoderConfig"]
