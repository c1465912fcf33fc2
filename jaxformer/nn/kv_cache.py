"""The KV cache: plain arrays, so it can be a `jax.lax.scan` carry.

One layer's cache is {"k": [batch, kv_heads, max_len, head_dim], "v": same,
"segment_ids": [batch, max_len] int32}. A token at position p is written to slot p, so the slot
index *is* the key position; segment id 0 marks a slot never written (or padding), which the mask
hides. A model's cache stacks these over layers on a leading axis.

Heads come before time so that attention over the cache is a batched matmul over (batch, head)
with no transpose: a decode step then reads the cache once instead of copying it.
"""

import jax
import jax.numpy as jnp


def init_layer_cache(batch: int, max_len: int, kv_heads: int, head_dim: int,
                     dtype: jnp.dtype = jnp.float32) -> dict[str, jax.Array]:
    return {
        "k": jnp.zeros((batch, kv_heads, max_len, head_dim), dtype),
        "v": jnp.zeros((batch, kv_heads, max_len, head_dim), dtype),
        "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
    }


def write(cache: dict[str, jax.Array], k: jax.Array, v: jax.Array, positions: jax.Array,
          segment_ids: jax.Array) -> dict[str, jax.Array]:
    """Scatter new keys/values [batch, time, kv_heads, head_dim] into their position slots."""
    rows = jnp.arange(k.shape[0])[:, None]
    # Index arrays on axes 0 and 2 around a slice: the indexed view is [batch, time, kv_heads,
    # head_dim] (numpy's rule for split advanced indices), the layout of k and v.
    return {
        "k": cache["k"].at[rows, :, positions].set(k.astype(cache["k"].dtype)),
        "v": cache["v"].at[rows, :, positions].set(v.astype(cache["v"].dtype)),
        "segment_ids": cache["segment_ids"].at[rows, positions].set(segment_ids.astype(jnp.int32)),
    }
