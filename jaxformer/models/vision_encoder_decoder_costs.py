"""Deprecated: import from jaxformer.models.vision_encoder_decoder.costs (and
vision_encoder_decoder_sizes from jaxformer.models.vision_encoder_decoder); kept for one
release."""

from jaxformer.models.vision_encoder_decoder.costs import (GROUPS,
                                                           vision_encoder_decoder_flops_parts,
                                                           vision_encoder_decoder_param_counts)
from jaxformer.models.vision_encoder_decoder.family import vision_encoder_decoder_sizes

__all__ = ["GROUPS", "vision_encoder_decoder_flops_parts", "vision_encoder_decoder_param_counts",
           "vision_encoder_decoder_sizes"]
