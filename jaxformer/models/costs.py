"""Deprecated: import from jaxformer.models.counting (and jaxformer.models.decoder.costs for the
decoder's counts); kept for one release."""

from jaxformer.models.counting import (DENSE, ParamCounts, count_params, flops_parts,
                                       flops_per_token, generic_param_counts, param_counts,
                                       param_shapes)
from jaxformer.models.decoder.costs import decoder_flops_parts, decoder_param_counts, ffn_params

__all__ = ["DENSE", "ParamCounts", "count_params", "decoder_flops_parts", "decoder_param_counts",
           "ffn_params", "flops_parts", "flops_per_token", "generic_param_counts", "param_counts",
           "param_shapes"]
