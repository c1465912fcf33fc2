"""Deprecated: import from jaxformer.models.encoder; kept for one release."""

from jaxformer.models.encoder.config import (HEADS, LABEL_HEADS, MLM_HEADS, POOLED_HEADS,
                                             EncoderConfig)

__all__ = ["HEADS", "LABEL_HEADS", "MLM_HEADS", "POOLED_HEADS", "EncoderConfig"]
