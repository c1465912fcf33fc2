"""KV-cache writes against a naive loop: each token's key, value and segment id land in the slot
of its position, padding keeps segment id 0 (which the attention mask hides), other slots stay."""

import jax.numpy as jnp
import numpy as np

from jaxformer.nn import kv_cache


def test_write_puts_each_token_in_its_position_slot():
    rng = np.random.default_rng(0)
    batch, kv_heads, max_len, head_dim = 2, 2, 8, 4
    k = rng.normal(size=(batch, 3, kv_heads, head_dim)).astype(np.float32)
    v = rng.normal(size=(batch, 3, kv_heads, head_dim)).astype(np.float32)
    positions = np.array([[0, 1, 2], [5, 6, 7]])
    segments = np.array([[1, 1, 0], [2, 0, 2]])  # 0: padding
    cache = kv_cache.init_layer_cache(batch, max_len, kv_heads, head_dim)
    cache = kv_cache.write(cache, jnp.asarray(k), jnp.asarray(v), jnp.asarray(positions),
                           jnp.asarray(segments))

    want_k = np.zeros((batch, kv_heads, max_len, head_dim), np.float32)
    want_v = np.zeros_like(want_k)
    want_segments = np.zeros((batch, max_len), np.int32)
    for b in range(batch):
        for t in range(3):
            p = positions[b, t]
            want_k[b, :, p], want_v[b, :, p] = k[b, t], v[b, t]
            want_segments[b, p] = segments[b, t]
    np.testing.assert_array_equal(np.asarray(cache.k), want_k)
    np.testing.assert_array_equal(np.asarray(cache.v), want_v)
    np.testing.assert_array_equal(np.asarray(cache.segment_ids), want_segments)
