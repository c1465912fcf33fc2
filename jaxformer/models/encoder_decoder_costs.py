"""Deprecated: import from jaxformer.models.encoder_decoder.costs (and encoder_decoder_sizes from
jaxformer.models.encoder_decoder); kept for one release."""

from jaxformer.models.encoder_decoder.costs import (GROUPS, encoder_decoder_flops_parts,
                                                    encoder_decoder_param_counts)
from jaxformer.models.encoder_decoder.family import encoder_decoder_sizes

__all__ = ["GROUPS", "encoder_decoder_flops_parts", "encoder_decoder_param_counts",
           "encoder_decoder_sizes"]
