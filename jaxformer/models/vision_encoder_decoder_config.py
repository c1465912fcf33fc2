"""Deprecated: import from jaxformer.models.vision_encoder_decoder; kept for one release."""

from jaxformer.models.vision_encoder_decoder.config import (ImageEncoderConfig, TextDecoderConfig,
                                                            VisionEncoderDecoderConfig)

__all__ = ["ImageEncoderConfig", "TextDecoderConfig", "VisionEncoderDecoderConfig"]
