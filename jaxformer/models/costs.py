"""What a model costs: parameters (from abstract shapes, nothing allocated) and training FLOPs."""

import dataclasses

import jax
import numpy as np
from flax import nnx

from jaxformer.models.config import DecoderConfig


def param_shapes(config: DecoderConfig) -> nnx.State:
    """The model's parameter state as `jax.ShapeDtypeStruct`s: no weights are allocated."""
    from jaxformer.models.decoder import DecoderLM

    abstract = nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0)))
    return nnx.state(abstract, nnx.Param)


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """Parameters by where they sit; tied weights counted once (as HF's `num_parameters()`)."""

    token_embedding: int  # the [vocab, embed] table (also the LM head when tied)
    positions: int  # a learned position table; 0 for RoPE, ALiBi, sinusoidal
    lm_head: int  # an untied output matrix; 0 when tied
    attention: int  # all layers: q, k, v, out projections (and biases)
    feed_forward: int  # all layers
    norms: int  # all layers and the final norm
    num_layers: int
    per_layer: int  # one transformer block

    @property
    def total(self) -> int:
        return (self.token_embedding + self.positions + self.lm_head + self.attention
                + self.feed_forward + self.norms)

    @property
    def non_positional(self) -> int:
        """N in the FLOPs formula: everything but position tables."""
        return self.total - self.positions

    @property
    def embedding(self) -> int:
        """Token and position tables plus an untied LM head: parameters used as lookups or the
        final projection rather than in the layers."""
        return self.token_embedding + self.positions + self.lm_head


def param_counts(config: DecoderConfig) -> ParamCounts:
    """Counted from the shapes of a one-layer copy of the model, its layer counted `num_layers`
    times. Tracing the full stack costs time quadratic in the number of parameters (JAX walks the
    trace to build an error message each time flax reads an RNG counter), several seconds for
    GPT-2 xl; the layers are identical, so one suffices."""
    state = param_shapes(config.replace(num_layers=1))
    sizes: dict[str, int] = {}
    per_layer = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        if keys[0] == "layers":
            # ["layers", 0, "attention", ...] (a list) or ["layers", "attention", ...] (stacked)
            sublayer = next(k for k in keys[1:] if not k.isdigit())
            group = {"attention": "attention", "feed_forward": "feed_forward"}.get(sublayer, "norms")
            per_layer += int(np.prod(leaf.shape))
            size = int(np.prod(leaf.shape)) * config.num_layers
        else:
            group = {"embed": "token_embedding", "position_embedding": "positions",
                     "lm_head": "lm_head"}.get(keys[0], "norms")
            size = int(np.prod(leaf.shape))
        sizes[group] = sizes.get(group, 0) + size
    groups = ("token_embedding", "positions", "lm_head", "attention", "feed_forward", "norms")
    return ParamCounts(**{name: sizes.get(name, 0) for name in groups},
                       num_layers=config.num_layers, per_layer=per_layer)


def count_params(config: DecoderConfig, *, include_positions: bool = True) -> int:
    """Number of parameters, tied weights counted once (as HF's `num_parameters()` does)."""
    counts = param_counts(config)
    return counts.total if include_positions else counts.non_positional


def ffn_params(config: DecoderConfig) -> int:
    """Parameters in the feed-forward sublayers of all layers (kernels and biases)."""
    return param_counts(config).feed_forward


def flops_per_token_parts(config: DecoderConfig, seq_len: int | None = None) -> tuple[int, int]:
    """Training FLOPs per token in PaLM's two parts (appendix B): 6N for the weight matmuls of the
    forward (2N) and backward (4N) passes, N the parameters less position tables; and
    12 * layers * heads * head_dim * T for attention scores and weighted values at sequence
    length T (default: the context). The attention part counts the full (unmasked) score matrix."""
    seq_len = seq_len or config.max_seq_len
    dense = 6 * count_params(config, include_positions=False)
    attention = 12 * config.num_layers * config.num_heads * config.head_size * seq_len
    return dense, attention


def flops_per_token(config: DecoderConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token, 6N + 12 * layers * d_model * seq_len (PaLM, appendix B); see
    `flops_per_token_parts`."""
    return float(sum(flops_per_token_parts(config, seq_len)))
