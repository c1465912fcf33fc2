"""Transformer building blocks as Flax NNX modules. They know shapes and logical axis names only."""

from jaxformer.nn.attention import Attention
from jaxformer.nn.attention_ops import attention_mask, einsum_attention, xla_attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.dropout import dropout
from jaxformer.nn.embedding import Embed, LearnedPositions
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.kv_cache import init_layer_cache
from jaxformer.nn.linear import Linear
from jaxformer.nn.norms import LayerNorm, RMSNorm, make_norm
from jaxformer.nn.positions import (RopeScaling, alibi_bias, alibi_slopes, apply_rope,
                                    rope_inverse_frequencies, sinusoidal)
from jaxformer.nn.relative_position import RelativePositionBias, relative_position_bucket

__all__ = [
    "Attention", "Embed", "FeedForward", "LayerNorm", "LearnedPositions", "Linear", "RMSNorm",
    "RelativePositionBias", "RopeScaling", "TransformerBlock", "alibi_bias", "alibi_slopes",
    "apply_rope", "attention_mask", "dropout", "einsum_attention", "init_layer_cache", "make_norm",
    "relative_position_bucket", "rope_inverse_frequencies", "sinusoidal", "xla_attention",
]
