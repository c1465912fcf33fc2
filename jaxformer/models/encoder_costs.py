"""Deprecated: import from jaxformer.models.encoder.costs (and encoder_sizes from
jaxformer.models.encoder); kept for one release."""

from jaxformer.models.encoder.costs import (EMBEDDINGS, PARTS, encoder_flops_parts,
                                            encoder_param_counts)
from jaxformer.models.encoder.family import encoder_sizes

__all__ = ["EMBEDDINGS", "PARTS", "encoder_flops_parts", "encoder_param_counts", "encoder_sizes"]
