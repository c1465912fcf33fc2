"""Caches for decoding: plain arrays in small pytree classes, so a cache can be a `lax.scan` carry.

- `KVCache` (self-attention): k/v [batch, kv_heads, max_len, head_dim] and segment_ids
  [batch, max_len]. A token at position p is written to slot p, so the slot index *is* the key
  position; segment id 0 marks a slot never written (or padding), which the mask hides.
- `MemoryCache` (cross-attention): the keys and values of the encoder's output ("memory"),
  computed once when decoding starts and only read afterwards; segment_ids [batch, memory_len]
  marks the memory's padding with 0.

Heads come before time so that attention over a cache is a batched matmul over (batch, head) with
no transpose: a decode step then reads the cache once instead of copying it.

Each class declares the batch axis of each of its arrays, counted from the end, so `reorder`
(beam search, which reorders rows) finds it whatever leading axes a model stacks on (a scanned
stack of layers adds one in front).
"""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    k: jax.Array  # [batch, kv_heads, max_len, head_dim]
    v: jax.Array  # [batch, kv_heads, max_len, head_dim]
    segment_ids: jax.Array  # [batch, max_len] int32; 0: empty slot or padding
    batch_axes: ClassVar[dict[str, int]] = {"k": -4, "v": -4, "segment_ids": -2}


@struct.dataclass
class MemoryCache:
    k: jax.Array  # [batch, kv_heads, memory_len, head_dim]
    v: jax.Array  # [batch, kv_heads, memory_len, head_dim]
    segment_ids: jax.Array  # [batch, memory_len] int32; 0: padding
    batch_axes: ClassVar[dict[str, int]] = {"k": -4, "v": -4, "segment_ids": -2}


CACHE_TYPES = (KVCache, MemoryCache)


def init_layer_cache(batch: int, max_len: int, kv_heads: int, head_dim: int,
                     dtype: jnp.dtype = jnp.float32) -> KVCache:
    """An empty self-attention cache for `batch` rows of up to `max_len` tokens."""
    return KVCache(k=jnp.zeros((batch, kv_heads, max_len, head_dim), dtype),
                   v=jnp.zeros((batch, kv_heads, max_len, head_dim), dtype),
                   segment_ids=jnp.zeros((batch, max_len), jnp.int32))


def init_memory_cache(batch: int, memory_len: int, kv_heads: int, head_dim: int,
                      dtype: jnp.dtype = jnp.float32) -> MemoryCache:
    """A cross-attention cache to be filled at the first decoding call (the prefill)."""
    return MemoryCache(k=jnp.zeros((batch, kv_heads, memory_len, head_dim), dtype),
                       v=jnp.zeros((batch, kv_heads, memory_len, head_dim), dtype),
                       segment_ids=jnp.zeros((batch, memory_len), jnp.int32))


def heads_major(x: jax.Array) -> jax.Array:
    """[batch, time, kv_heads, head_dim] -> [batch, kv_heads, time, head_dim]."""
    return jnp.swapaxes(x, 1, 2)


def write(cache: KVCache, k: jax.Array, v: jax.Array, positions: jax.Array,
          segment_ids: jax.Array) -> KVCache:
    """Scatter new keys/values [batch, time, kv_heads, head_dim] into their position slots."""
    rows = jnp.arange(k.shape[0])[:, None]
    # Index arrays on axes 0 and 2 around a slice: the indexed view is [batch, time, kv_heads,
    # head_dim] (numpy's rule for split advanced indices), the layout of k and v.
    return KVCache(k=cache.k.at[rows, :, positions].set(k.astype(cache.k.dtype)),
                   v=cache.v.at[rows, :, positions].set(v.astype(cache.v.dtype)),
                   segment_ids=cache.segment_ids.at[rows, positions].set(
                       segment_ids.astype(jnp.int32)))


def reorder(cache: Any, indices: jax.Array, *, types: tuple[type, ...] = CACHE_TYPES) -> Any:
    """Take rows `indices` [new_batch] of every cache in `cache` (any pytree holding KVCache /
    MemoryCache objects) along each array's declared batch axis: beam search's reordering.
    `types` limits it to some cache classes (beam search reorders only KVCache: the beams of one
    input share its MemoryCache rows)."""
    def take(node):
        if not isinstance(node, types):
            return node
        return node.replace(**{name: jnp.take(getattr(node, name), indices, axis=axis)
                               for name, axis in node.batch_axes.items()})

    return jax.tree.map(take, cache, is_leaf=lambda x: isinstance(x, CACHE_TYPES))
