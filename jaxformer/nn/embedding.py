"""Token embeddings (with the tied unembedding that GPT-2 uses as its LM head) and learned positions.

A vocabulary can be padded (`padded_size`): GPT-2's 50,257 tokens become 50,304 rows, a multiple
of 128, so the table and the logits split evenly over devices and matmul tiles. The real rows are
drawn exactly as an unpadded table would be (same key, same shape); the padding rows are zeros,
get zero gradients and are dropped from the logits, so nothing a user sees changes.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.params import Initializer, normal, param
from jaxformer.nn.sharding import gathered


def padded(init: Initializer, real_size: int, axis: int) -> Initializer:
    """`init` for an array whose `axis` holds `real_size` real entries followed by zero padding:
    the real part is drawn as if the array had no padding."""
    def draw(key, shape, dtype):
        real = list(shape)
        real[axis] = real_size
        values = init(key, tuple(real), dtype)
        pad = [(0, 0)] * len(shape)
        pad[axis] = (0, shape[axis] - real_size)
        return jnp.pad(values, pad)

    return draw


class Embed(nnx.Module):
    """A [padded_size, embed] table (padded_size defaults to vocab_size). `attend(x)` multiplies
    by its transpose: the tied LM head, float32 logits over the real vocabulary."""

    def __init__(self, vocab_size: int, dim: int, *, padded_size: int | None = None,
                 init_std: float = 0.02, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        padded_size = padded_size or vocab_size
        if padded_size < vocab_size:
            raise ValueError(f"padded_size={padded_size} is smaller than vocab_size={vocab_size}")
        self.vocab_size, self.dtype = vocab_size, dtype
        self.embedding = param(rngs.params(), padded(normal(init_std), vocab_size, 0),
                               (padded_size, dim), ("vocab", "embed"), param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:  # [batch, time] -> [batch, time, embed]
        table = gathered(self.embedding[...].astype(self.dtype), ("vocab", "embed"), table=True)
        return jnp.take(table, ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """[batch, time, embed] -> [batch, time, vocab] float32: products in the compute dtype,
        accumulated in float32 (bf16 logits would round away the small differences that
        sampling and the loss depend on)."""
        table = gathered(self.embedding[...].astype(self.dtype), ("vocab", "embed"))
        logits = jnp.einsum("btd,vd->btv", x.astype(self.dtype), table,
                            preferred_element_type=jnp.float32)
        return logits[..., :self.vocab_size]


class LearnedPositions(nnx.Module):
    """A [max_len, embed] table indexed by explicit positions (GPT-2's `wpe`, BERT's positions)."""

    def __init__(self, max_len: int, dim: int, *, init_std: float = 0.02,
                 dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = param(rngs.params(), normal(init_std), (max_len, dim), ("position", "embed"),
                               param_dtype)

    def __call__(self, positions: jax.Array) -> jax.Array:  # [batch, time] -> [batch, time, embed]
        table = gathered(self.embedding[...].astype(self.dtype), ("position", "embed"), table=True)
        return jnp.take(table, positions, axis=0)
