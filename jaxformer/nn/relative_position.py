"""T5's relative position buckets and the learned bias table they index (Raffel et al. 2020, 2.1).

Attention scores get an additive bias that depends only on the distance from a query to a key,
learned per head for each of `num_buckets` buckets: exact distances for small ones, logarithmically
wider buckets up to `max_distance`, one bucket for everything beyond. A bidirectional stack (the
encoder) spends half its buckets on keys after the query; a causal stack (the decoder) only sees
keys at or before the query, so all its buckets count backwards.

T5 keeps one table per stack, in its first layer, and adds the same bias in every layer; no
1/sqrt(head_dim) scaling is applied to the scores it is added to.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.axes import declare_logical_axis
from jaxformer.nn.params import Initializer, normal, param

# The table's bucket axis ([buckets, heads]): small, kept whole on every device.
declare_logical_axis("relative_buckets", None)


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool,
                             num_buckets: int = 32, max_distance: int = 128) -> jax.Array:
    """relative_position = key position - query position (int, any shape) -> bucket ids in
    [0, num_buckets), int32, the same shape.

    bidirectional: half the buckets for keys before the query (distance <= 0), half for keys
    after it. Causal: positive distances (future keys, masked anyway) share bucket 0. In each
    half, distances below half its buckets get one bucket each; the rest are spaced
    logarithmically up to `max_distance`, beyond which they share the last bucket. The logarithm
    is taken in float32 and truncated, as Mesh TensorFlow and HF transformers compute it, so
    every distance lands in the same bucket as theirs.
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # distance 0 would take log(0); those entries are small and their value here is discarded.
    scaled = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
              / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    if_large = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
    return buckets + jnp.where(is_small, distance, if_large)


class RelativePositionBias(nnx.Module):
    """A [num_buckets, heads] table; `__call__` gives the bias [batch, heads, q_time, k_time]
    for queries at `q_positions` [batch, q_time] and keys at `k_positions` [batch, k_time]."""

    def __init__(self, num_heads: int, *, bidirectional: bool, num_buckets: int = 32,
                 max_distance: int = 128, init: Initializer | None = None,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.embedding = param(rngs.params(), init or normal(0.02), (num_buckets, num_heads),
                               ("relative_buckets", "heads"), param_dtype)

    def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
        relative = k_positions[:, None, :] - q_positions[:, :, None]  # [batch, q, k]
        buckets = relative_position_bucket(relative, bidirectional=self.bidirectional,
                                           num_buckets=self.num_buckets,
                                           max_distance=self.max_distance)
        values = jnp.take(self.embedding[...].astype(jnp.float32), buckets, axis=0)  # [b, q, k, h]
        return jnp.transpose(values, (0, 3, 1, 2))
