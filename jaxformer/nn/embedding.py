"""Token embeddings (with the tied unembedding that GPT-2 uses as its LM head) and learned positions."""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.params import normal, param


class Embed(nnx.Module):
    """A [vocab, embed] table. `attend(x)` multiplies by its transpose: the tied LM head."""

    def __init__(self, vocab_size: int, dim: int, *, init_std: float = 0.02,
                 dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = param(rngs.params(), normal(init_std), (vocab_size, dim), ("vocab", "embed"),
                               param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:  # [batch, time] -> [batch, time, embed]
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:  # [batch, time, embed] -> [batch, time, vocab]
        return jnp.einsum("btd,vd->btv", x.astype(self.dtype), self.embedding[...].astype(self.dtype))


class LearnedPositions(nnx.Module):
    """A [max_len, embed] table indexed by explicit positions (GPT-2's `wpe`, BERT's positions)."""

    def __init__(self, max_len: int, dim: int, *, init_std: float = 0.02,
                 dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = param(rngs.params(), normal(init_std), (max_len, dim), ("position", "embed"),
                               param_dtype)

    def __call__(self, positions: jax.Array) -> jax.Array:  # [batch, time] -> [batch, time, embed]
        return jnp.take(self.embedding[...], positions, axis=0).astype(self.dtype)
