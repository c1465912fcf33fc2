"""Cross-attention: `Attention(x, kv=memory)` against a naive softmax over the memory, and a decoder
stack with cross-attention decoding step by step from its caches exactly as its full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models.layers import run_layers
from jaxformer.nn import Attention, FeedForward, RMSNorm
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.kv_cache import (KVCache, MemoryCache, init_layer_cache, init_memory_cache,
                                   reorder)

D, HEADS, KV_HEADS, HEAD_DIM = 24, 4, 2, 8


def naive_cross_attention(module, x, memory, x_segments, memory_segments):
    """softmax(q k^T / sqrt(d)) v written with numpy loops over rows, heads and queries; a query
    sees the memory tokens that are not padding (segment 0) and, when the queries carry segment
    ids, belong to its own segment."""
    def project(linear, inputs):
        out = np.tensordot(inputs, np.asarray(linear.kernel[...]), axes=1)
        return out + np.asarray(linear.bias[...]) if linear.bias is not None else out

    q, k, v = project(module.query, x), project(module.key, memory), project(module.value, memory)
    batch, time = x.shape[:2]
    group = HEADS // KV_HEADS
    heads = np.zeros((batch, time, HEADS, HEAD_DIM))
    for b in range(batch):
        for h in range(HEADS):
            for i in range(time):
                seen = memory_segments[b] != 0
                if x_segments is not None:
                    seen &= memory_segments[b] == x_segments[b, i]
                scores = k[b, :, h // group] @ q[b, i, h] / np.sqrt(HEAD_DIM)
                scores = np.where(seen, scores, -np.inf)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                heads[b, i, h] = weights @ v[b, :, h // group]
    out = np.tensordot(heads, np.asarray(module.out.kernel[...]), axes=2)
    return out + np.asarray(module.out.bias[...])


@pytest.mark.parametrize("implementation", ["xla", "einsum"])
@pytest.mark.parametrize("packed", [False, True])
def test_cross_attention_equals_naive_softmax_over_the_memory(implementation, packed):
    module = Attention(D, HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, use_bias=True,
                       position="rope", implementation=implementation, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    x, memory = rng.normal(size=(2, 5, D)), rng.normal(size=(2, 7, D))
    memory_segments = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])  # row 0 padded
    x_segments = None
    if packed:  # two source/target pairs in row 1: target i reads only source i
        memory_segments[1] = [1, 1, 1, 2, 2, 2, 2]
        x_segments = np.array([[1, 1, 1, 1, 1], [1, 1, 2, 2, 2]])
    # RoPE and the causal mask do not apply across sequences: positions change nothing.
    for positions in (np.zeros((2, 5), np.int32), np.tile(np.arange(5, 10), (2, 1))):
        got, cache = module(jnp.asarray(x, jnp.float32), jnp.asarray(positions),
                            None if x_segments is None else jnp.asarray(x_segments),
                            kv=jnp.asarray(memory, jnp.float32),
                            kv_segment_ids=jnp.asarray(memory_segments))
        assert cache is None
        want = naive_cross_attention(module, x, memory, x_segments, memory_segments)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def decoder_stack(num_layers=2, *, rngs):
    """Pre-norm blocks of causal self-attention (RoPE), cross-attention and a SwiGLU feed-forward."""
    def block():
        return TransformerBlock({
            "attention": (Attention(D, HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                                    position="rope", rngs=rngs), RMSNorm(D, rngs=rngs)),
            "cross_attention": (Attention(D, HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                                          cross=True, rngs=rngs), RMSNorm(D, rngs=rngs)),
            "feed_forward": (FeedForward(D, 32, activation="swiglu", rngs=rngs), RMSNorm(D, rngs=rngs)),
        })
    return nnx.List([block() for _ in range(num_layers)])


def test_decoding_with_the_memory_cache_equals_the_full_forward():
    layers = decoder_stack(rngs=nnx.Rngs(2))
    rng = np.random.default_rng(3)
    batch, time, memory_len = 2, 9, 6
    x = jnp.asarray(rng.normal(size=(batch, time, D)), jnp.float32)
    memory = jnp.asarray(rng.normal(size=(batch, memory_len, D)), jnp.float32)
    memory_segments = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2])
    positions = jnp.broadcast_to(jnp.arange(time), (batch, time))

    @jax.jit
    def run(state, x, ctx, cache):
        return run_layers(nnx.merge(graphdef, state), x, ctx, cache, None, scan=False, remat="none")

    graphdef, state = nnx.split(layers)
    full, _, _ = run(state, x, BlockContext(positions=positions, memory=memory,
                                            memory_segment_ids=memory_segments), None)

    caches = [{"attention": init_layer_cache(batch, time, KV_HEADS, HEAD_DIM),
               "cross_attention": init_memory_cache(batch, memory_len, KV_HEADS, HEAD_DIM)}
              for _ in range(2)]
    # Prefill 4 tokens: the memory's keys and values go into the caches once...
    prompt = 4
    out, caches, _ = run(state, x[:, :prompt],
                         BlockContext(positions=positions[:, :prompt], memory=memory,
                                      memory_segment_ids=memory_segments), caches)
    assert isinstance(caches[0]["cross_attention"], MemoryCache)
    np.testing.assert_array_equal(caches[0]["cross_attention"].segment_ids, memory_segments)
    steps = [out]
    # ...and each later step reads them from the cache: no memory in the context at all.
    for t in range(prompt, time):
        out, caches, _ = run(state, x[:, t:t + 1], BlockContext(positions=positions[:, t:t + 1]),
                             caches)
        steps.append(out)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, axis=1)), np.asarray(full),
                               rtol=1e-5, atol=1e-5)


def test_a_cross_attention_sublayer_without_memory_says_so():
    block = decoder_stack(1, rngs=nnx.Rngs(0))[0]
    x = jnp.zeros((1, 3, D))
    with pytest.raises(ValueError, match="needs the memory"):
        block(x, BlockContext(positions=jnp.zeros((1, 3), jnp.int32)))


def test_reorder_takes_rows_along_each_declared_batch_axis():
    """Beam search reorders rows of any cache layout: per layer, or stacked on a layer axis."""
    rng = np.random.default_rng(4)
    def layer_cache():
        return {"attention": KVCache(*(jnp.asarray(rng.normal(size=(3, 2, 5, 4))) for _ in "kv"),
                                     segment_ids=jnp.asarray(rng.integers(0, 3, (3, 5)))),
                "cross_attention": MemoryCache(*(jnp.asarray(rng.normal(size=(3, 2, 6, 4)))
                                                 for _ in "kv"),
                                               segment_ids=jnp.asarray(rng.integers(0, 3, (3, 6))))}
    per_layer = [layer_cache(), layer_cache()]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *per_layer)
    rows = jnp.asarray([2, 0, 0, 1])
    for cache in (per_layer, stacked):
        moved = reorder(cache, rows)
        for layer in range(2):
            got = moved[layer] if isinstance(moved, list) else jax.tree.map(lambda a: a[layer], moved)
            want = per_layer[layer]
            for name in ("attention", "cross_attention"):
                for field in ("k", "v", "segment_ids"):
                    np.testing.assert_array_equal(getattr(got[name], field),
                                                  np.asarray(getattr(want[name], field))[rows])
