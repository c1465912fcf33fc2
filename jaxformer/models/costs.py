"""What a model costs: parameters (from abstract shapes, nothing allocated) and training FLOPs."""

import jax
import numpy as np
from flax import nnx

from jaxformer.models.config import DecoderConfig


def param_shapes(config: DecoderConfig) -> nnx.State:
    """The model's parameter state as `jax.ShapeDtypeStruct`s: no weights are allocated."""
    from jaxformer.models.decoder import DecoderLM

    abstract = nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0)))
    return nnx.state(abstract, nnx.Param)


def count_params(config: DecoderConfig, *, include_positions: bool = True) -> int:
    """Number of parameters, tied weights counted once (as HF's `num_parameters()` does)."""
    state = param_shapes(config)
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if not include_positions and "position_embedding" in jax.tree_util.keystr(path):
            continue
        total += int(np.prod(leaf.shape))
    return total


def ffn_params(config: DecoderConfig) -> int:
    """Parameters in the feed-forward sublayers (kernels and biases)."""
    state = param_shapes(config)
    return sum(int(np.prod(leaf.shape)) for path, leaf in jax.tree_util.tree_leaves_with_path(state)
               if "feed_forward" in jax.tree_util.keystr(path))


def flops_per_token(config: DecoderConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token, 6N + 12 * layers * d_model * seq_len (PaLM, appendix B), where N
    excludes position tables. The attention term counts the full (unmasked) score matrix."""
    seq_len = seq_len or config.max_seq_len
    n = count_params(config, include_positions=False)
    return 6.0 * n + 12.0 * config.num_layers * config.num_heads * config.head_size * seq_len
