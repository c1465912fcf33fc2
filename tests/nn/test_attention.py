"""Attention against a naive numpy reference: softmax(q k^T / sqrt(d) + bias) v with the mask
written out as loops over (query, key) pairs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.nn import Attention, init_layer_cache
from jaxformer.nn import attention_ops
from jaxformer.nn.attention_ops import (attention_mask, blocked_causal_attention, einsum_attention,
                                         xla_attention)
from jaxformer.nn.positions import alibi_bias
from support.attention_reference import indices, naive_attention, naive_mask, random_qkv

IMPLEMENTATIONS = {
    "einsum": jax.jit(lambda *a, **kw: einsum_attention(*a, **kw)[0], static_argnames="scale"),
    "xla": jax.jit(xla_attention, static_argnames=("scale", "is_causal", "implementation")),
}


def jitted(module):
    """`module(...)` as one compiled function (eager op-by-op dispatch is slow on a shared CPU)."""
    graphdef, state = nnx.split(module)

    @jax.jit
    def call(state, *args, **kwargs):
        return nnx.merge(graphdef, state)(*args, **kwargs)

    return lambda *args, **kwargs: call(state, *args, **kwargs)


def paper_alibi_bias(heads, q_pos, k_pos):
    """Press et al.: head h (from 1) has slope 2^(-8h/heads); bias = -slope * (query - key)."""
    slopes = np.array([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])
    distance = q_pos[:, None, :, None] - k_pos[:, None, None, :]
    return -slopes[None, :, None, None] * distance


# (name, segment ids [2, 7] or None, causal, window)
MASK_CASES = [
    ("causal", None, True, None),
    ("bidirectional", None, False, None),
    ("padding", np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]]), True, None),
    ("packed", np.array([[1, 1, 2, 2, 2, 3, 0], [1, 2, 2, 2, 2, 2, 2]]), True, None),
    ("packed_bidirectional", np.array([[1, 1, 2, 2, 2, 3, 0], [4, 4, 4, 1, 1, 0, 0]]), False, None),
    ("sliding_window", None, True, 3),
    ("window_and_segments", np.array([[1, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 0, 0]]), True, 2),
]


@pytest.mark.parametrize("name,segments,causal,window", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_mask_matches_loops(name, segments, causal, window):
    pos = indices(2, 7)
    seg = None if segments is None else jnp.asarray(segments)
    got = attention_mask(jnp.asarray(pos), jnp.asarray(pos), seg, seg, causal=causal,
                         sliding_window=window)
    assert got.shape == (2, 1, 7, 7)
    np.testing.assert_array_equal(np.asarray(got[:, 0]),
                                  naive_mask(pos, pos, segments, segments, causal=causal, window=window))


def assert_matches_naive(attend, seed, segments, causal, window, *, pass_mask=True):
    """attend(q, k, v, mask or None) on 2 x 7 tokens against the loops, on the queries that have
    something to attend to (padding rows are don't-care, but must stay finite)."""
    q, k, v = random_qkv(seed)
    pos = indices(2, 7)
    seg = None if segments is None else jnp.asarray(segments)
    mask = attention_mask(jnp.asarray(pos), jnp.asarray(pos), seg, seg, causal=causal,
                          sliding_window=window)
    got = np.asarray(attend(q, k, v, mask if pass_mask else None))
    assert np.isfinite(got).all(), "a fully masked padding row produced NaN/inf"
    ref_mask = naive_mask(pos, pos, segments, segments, causal=causal, window=window)
    real = ref_mask.any(-1)
    np.testing.assert_allclose(got[real], naive_attention(q, k, v, ref_mask)[real],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("name,segments,causal,window", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_attention_matches_naive(impl, name, segments, causal, window):
    attend = IMPLEMENTATIONS[impl]
    assert_matches_naive(lambda q, k, v, mask: attend(q, k, v, mask, scale=1 / math.sqrt(8)),
                         0, segments, causal, window)


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("causal", [True, False])
def test_alibi_bias_matches_paper(impl, causal):
    q, k, v = random_qkv(1, heads=8, kv_heads=8)
    pos = indices(2, 7)
    bias = alibi_bias(8, jnp.asarray(pos), jnp.asarray(pos), causal)
    want_bias = paper_alibi_bias(8, pos, pos)
    if not causal:
        want_bias = -np.abs(want_bias)
    np.testing.assert_allclose(np.asarray(bias), want_bias, rtol=1e-6)
    mask = attention_mask(jnp.asarray(pos), jnp.asarray(pos), None, None, causal=causal)
    got = np.asarray(IMPLEMENTATIONS[impl](q, k, v, mask, bias, scale=1 / math.sqrt(8)))
    want = naive_attention(q, k, v, naive_mask(pos, pos, None, None, causal=causal), want_bias)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("kv_heads", [1, 2, 4])  # MQA, GQA, MHA
def test_grouped_kv_equals_repeated_heads(impl, kv_heads):
    q, k, v = random_qkv(2, heads=8, kv_heads=kv_heads)
    pos = indices(2, 7)
    segments = jnp.asarray([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    mask = attention_mask(jnp.asarray(pos), jnp.asarray(pos), segments, segments, causal=True)
    attend = IMPLEMENTATIONS[impl]
    grouped = np.asarray(attend(q, k, v, mask, scale=0.3))
    group = 8 // kv_heads
    repeated = np.asarray(attend(q, np.repeat(k, group, axis=2), np.repeat(v, group, axis=2), mask,
                                 scale=0.3))
    np.testing.assert_allclose(grouped, repeated, rtol=1e-5, atol=1e-6)
    # and both against the loops (which index kv head h // group directly)
    real = np.asarray(mask[:, 0]).any(-1)
    want = naive_attention(q * 0.3 * math.sqrt(8), k, v, np.asarray(mask[:, 0]))
    np.testing.assert_allclose(grouped[real], want[real], rtol=1e-5, atol=1e-5)


def test_einsum_weights_are_the_softmax():
    q, k, v = random_qkv(3)
    pos = indices(2, 7)
    mask = attention_mask(jnp.asarray(pos), jnp.asarray(pos), None, None, causal=True)
    _, weights = einsum_attention(q, k, v, mask, scale=1 / math.sqrt(8))
    weights = np.asarray(weights)
    assert weights.shape == (2, 4, 7, 7)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert (weights[:, :, np.triu_indices(7, 1)[0], np.triu_indices(7, 1)[1]] == 0).all()
    scores = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(8)
    scores = np.where(np.tril(np.ones((7, 7), bool)), scores, -np.inf)
    want = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(weights, want / want.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_padding_rows_have_finite_gradients():
    q, k, v = random_qkv(4)
    segments = jnp.asarray([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])  # one row all padding
    pos = jnp.asarray(indices(2, 7))
    mask = attention_mask(pos, pos, segments, segments, causal=True)
    for impl, attend in IMPLEMENTATIONS.items():
        out = attend(q, k, v, mask, scale=0.35)
        assert np.isfinite(np.asarray(out)).all(), impl
        grads = jax.grad(lambda q, k, v: attend(q, k, v, mask, scale=0.35).sum(), argnums=(0, 1, 2))(
            jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
        assert all(np.isfinite(np.asarray(g)).all() for g in grads), impl


# --- blocked causal attention (what `xla` runs on a CPU): query blocks against the keys they see

blocked = jax.jit(blocked_causal_attention, static_argnames=("scale", "block"))
CAUSAL_CASES = [c for c in MASK_CASES if c[2]]


@pytest.mark.parametrize("block", [2, 3, 64])  # 7 tokens: blocks of 2+2+2+1, 3+3+1, one block
@pytest.mark.parametrize("name,segments,causal,window", CAUSAL_CASES, ids=[c[0] for c in CAUSAL_CASES])
def test_blocked_causal_matches_naive(block, name, segments, causal, window):
    # the plain causal case without a mask too: the function applies the causal mask itself
    assert_matches_naive(
        lambda q, k, v, mask: blocked(q, k, v, mask, scale=1 / math.sqrt(8), block=block),
        5, segments, True, window, pass_mask=name != "causal")


@pytest.mark.parametrize("kv_heads", [1, 2, 8])  # MQA, GQA, MHA
def test_blocked_causal_with_bias_and_groups_matches_naive(kv_heads):
    q, k, v = random_qkv(6, tq=11, tk=11, heads=8, kv_heads=kv_heads)
    pos = indices(2, 11)
    bias = alibi_bias(8, jnp.asarray(pos), jnp.asarray(pos), True)
    segments = np.array([[1] * 8 + [0] * 3, [1] * 5 + [2] * 6])
    mask = attention_mask(jnp.asarray(pos), jnp.asarray(pos), jnp.asarray(segments),
                          jnp.asarray(segments), causal=True)
    got = np.asarray(blocked(q, k, v, mask, bias, scale=1 / math.sqrt(8), block=4))
    ref_mask = naive_mask(pos, pos, segments, segments, causal=True)
    real = ref_mask.any(-1)
    want = naive_attention(q, k, v, ref_mask, np.asarray(bias))
    np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-5)


def test_blocked_causal_gradients_match_dense():
    """Gradients of a loss over the real positions equal the dense einsum path's (packed rows,
    padding, blocks that cut through documents)."""
    q, k, v = (jnp.asarray(a) for a in random_qkv(7, tq=13, tk=13, heads=4, kv_heads=2))
    pos = jnp.asarray(indices(2, 13))
    segments = jnp.asarray([[1] * 6 + [2] * 5 + [0] * 2, [3] * 13])
    mask = attention_mask(pos, pos, segments, segments, causal=True)
    weight = jax.random.normal(jax.random.key(0), q.shape) * (segments != 0)[:, :, None, None]

    def loss(attend):
        return lambda q, k, v: jnp.sum(attend(q, k, v) * weight)

    want = jax.grad(loss(lambda *a: einsum_attention(*a, mask, scale=0.4)[0]), (0, 1, 2))(q, k, v)
    got = jax.grad(loss(lambda *a: blocked_causal_attention(*a, mask, scale=0.4, block=5)),
                   (0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)


def test_blocked_causal_bfloat16_stays_close():
    q, k, v = random_qkv(8, tq=20, tk=20)
    pos = indices(2, 20)
    got = blocked(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)), scale=1 / math.sqrt(8), block=8)
    assert got.dtype == jnp.bfloat16
    want = naive_attention(q, k, v, naive_mask(pos, pos, None, None, causal=True))
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=3e-2)


def test_module_runs_blocked_attention_on_cpu_for_causal_self_attention(monkeypatch):
    """`xla` on a CPU: causal self-attention goes through the blocked path (and agrees with
    einsum across several blocks); bidirectional attention does not."""
    calls = []
    real = attention_ops.blocked_causal_attention
    monkeypatch.setattr(attention_ops, "blocked_causal_attention",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    x = jax.random.normal(jax.random.key(5), (2, 150, 32))  # blocks of 64 + 64 + 22
    positions = jnp.broadcast_to(jnp.arange(150), (2, 150))
    segments = jnp.asarray([[1] * 150, [1] * 70 + [2] * 60 + [0] * 20])
    for causal, expected in ((True, 1), (False, 0)):
        calls.clear()
        modules = attention_pair(kv_heads=2, causal=causal)
        outs = {impl: np.asarray(m(x, positions, segments)[0]) for impl, m in modules.items()}
        assert len(calls) == expected
        real_rows = np.asarray(segments) != 0
        np.testing.assert_allclose(outs["xla"][real_rows], outs["einsum"][real_rows],
                                   rtol=1e-5, atol=1e-5)


# --- through the Attention module: einsum and xla give the same answers, with and without a cache


def attention_pair(position="none", kv_heads=2, window=None, causal=True):
    modules = {}
    for impl in ("einsum", "xla"):
        modules[impl] = Attention(32, 4, num_kv_heads=kv_heads, position=position, causal=causal,
                                  sliding_window=window, implementation=impl, use_bias=True,
                                  rngs=nnx.Rngs(0))
    # same seed and structure -> the same weights
    for a, b in zip(jax.tree.leaves(nnx.state(modules["einsum"], nnx.Param)),
                    jax.tree.leaves(nnx.state(modules["xla"], nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    return {impl: jitted(m) for impl, m in modules.items()}


MODULE_CASES = [("none", 2, None, True), ("rope", 2, None, True), ("alibi", 4, None, True),
                ("rope", 1, 3, True), ("none", 4, None, False)]


@pytest.mark.parametrize("position,kv_heads,window,causal", MODULE_CASES)
def test_module_implementations_agree(position, kv_heads, window, causal):
    modules = attention_pair(position, kv_heads, window, causal)
    x = jax.random.normal(jax.random.key(1), (2, 9, 32))
    positions = jnp.asarray([list(range(9)), [0, 1, 2, 3, 0, 1, 2, 0, 0]])
    for segments in (None, jnp.asarray([[1] * 9, [1, 1, 1, 1, 2, 2, 2, 0, 0]])):
        outs = {impl: m(x, positions, segments)[0] for impl, m in modules.items()}
        np.testing.assert_allclose(np.asarray(outs["einsum"]), np.asarray(outs["xla"]),
                                   rtol=1e-5, atol=1e-5)
        assert np.isfinite(np.asarray(outs["xla"])).all()


@pytest.mark.parametrize("position,kv_heads,window,causal",
                         [c for c in MODULE_CASES if c[3]])  # decoding is causal
def test_module_cache_path_agrees(position, kv_heads, window, causal):
    """Prefill 4 tokens, then decode 3 one at a time; both implementations and the cache-free
    forward over all 7 tokens agree."""
    modules = attention_pair(position, kv_heads, window, causal)
    x = jax.random.normal(jax.random.key(2), (2, 7, 32))
    positions = jnp.broadcast_to(jnp.arange(7), (2, 7))
    full = np.asarray(modules["xla"](x, positions)[0])
    for impl, module in modules.items():
        cache = init_layer_cache(2, 10, kv_heads, 8)
        out, cache = module(x[:, :4], positions[:, :4], cache=cache)
        steps = [out]
        for t in range(4, 7):
            out, cache = module(x[:, t:t + 1], positions[:, t:t + 1], cache=cache)
            steps.append(out)
        np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, axis=1)), full,
                                   rtol=1e-5, atol=1e-5, err_msg=impl)
        np.testing.assert_array_equal(np.asarray(cache.segment_ids),
                                      np.array([[1] * 7 + [0] * 3] * 2))


def test_module_matches_naive_reference():
    """The module's projections plus the loops reproduce its output (GQA, bias, padding)."""
    module = Attention(32, 4, num_kv_heads=2, use_bias=True, implementation="xla", rngs=nnx.Rngs(3))
    x = np.asarray(jax.random.normal(jax.random.key(4), (2, 6, 32)))
    segments = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 2, 2, 2, 2]])
    positions = np.array([[0, 1, 2, 3, 4, 5], [0, 1, 0, 1, 2, 3]])
    got = np.asarray(jitted(module)(jnp.asarray(x), jnp.asarray(positions), jnp.asarray(segments))[0])

    def project(linear):
        return np.tensordot(x, np.asarray(linear.kernel[...]), axes=1) + np.asarray(linear.bias[...])

    q, k, v = project(module.query), project(module.key), project(module.value)
    idx = indices(2, 6)
    mask = naive_mask(idx, idx, segments, segments, causal=True)
    heads = naive_attention(q, k, v, mask)
    want = np.tensordot(heads, np.asarray(module.out.kernel[...]), axes=2) + np.asarray(module.out.bias[...])
    real = segments != 0
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-5)
