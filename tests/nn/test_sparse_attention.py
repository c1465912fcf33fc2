"""Sparse patterns and the chunked (block-sparse) attention against dense masked references.

The patterns are checked pair by pair against their published definitions written out as loops;
the chunked computation against dense attention with that mask, forward and gradients, in f32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.nn.attention_ops import attention_mask, einsum_attention
from jaxformer.nn.chunked_attention import chunked_attention, live_fraction, plan
from jaxformer.nn.sparse_attention import SparsePattern, make_pattern
from support.attention_reference import child_et_al

PATTERNS = {
    "none": None,
    "sliding": SparsePattern("sliding", window=13),
    "strided": SparsePattern("strided", stride=8),
    "fixed": SparsePattern("fixed", stride=16, summary=4),
    "global_local": SparsePattern("global_local", window=9, global_tokens=5),
}


@pytest.mark.parametrize("name", [n for n in PATTERNS if n != "none"])
def test_patterns_match_their_definitions(name):
    p = PATTERNS[name]
    n = 70
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    got = np.asarray(p.allowed(i, j))
    want = np.array([[child_et_al(p.kind, a, b, l=p.stride, c=p.summary, w=p.window,
                                  g=p.global_tokens) for b in range(n)] for a in range(n)])
    assert (got == want).all()
    # The parts are disjoint and their union is the pattern, causal or not.
    for causal in (True, False):
        union = np.zeros((n, n), int)
        for part in p.parts(causal, n):
            q_tok = np.arange(n) if part.q_tokens is None else part.q_tokens
            k_tok = np.arange(n) if part.k_tokens is None else part.k_tokens
            cover = np.zeros((n, n), int)
            cover[np.ix_(q_tok, k_tok)] = part.allowed(q_tok[:, None], k_tok[None, :])
            union += cover
        assert union.max() == 1
        assert (union.astype(bool) == (want & ((i >= j) if causal else True))).all()


def dense_reference(q, k, v, seg, *, causal, pattern, scale):
    batch, t = q.shape[:2]
    index = jnp.broadcast_to(jnp.arange(t), (batch, t))
    mask = attention_mask(index, index, seg, seg, causal=causal, pattern=pattern)
    return einsum_attention(q, k, v, mask, scale=scale)[0], mask[:, 0].any(-1)


def inputs(batch=2, t=100, heads=4, kv_heads=2, d=16):
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (batch, t, heads, d))
    k = jax.random.normal(keys[1], (batch, t, kv_heads, d))
    v = jax.random.normal(keys[2], (batch, t, kv_heads, d))
    return q, k, v, jax.random.normal(keys[3], q.shape)


# Three documents and padding in one row, two documents in the other: every mask at once.
PACKED = np.array([[1] * 37 + [2] * 45 + [3] * 10 + [0] * 8, [1] * 60 + [2] * 40])


def output_and_grads(attend, w):
    """attend(q, k, v) and the gradients of sum(attend(q, k, v) * w), in one compiled call."""
    def both(q, k, v):
        out, vjp = jax.vjp(attend, q, k, v)
        return out, vjp(w)
    return jax.jit(both)


@pytest.mark.parametrize("name", list(PATTERNS))
def test_chunked_equals_dense_masked_reference(name):
    """Forward and gradients within 1e-5 (f32) for every pattern with packed segments and padding,
    causal and not; blocks of 16 so the 100 tokens make ragged blocks too."""
    q, k, v, weight = inputs()
    seg = jnp.asarray(PACKED)
    pattern = PATTERNS[name]
    for causal in (True, False):
        def chunked(q, k, v):
            return chunked_attention(q, k, v, seg, seg, scale=0.25, causal=causal, pattern=pattern,
                                     block=16)

        def dense(q, k, v):
            return dense_reference(q, k, v, seg, causal=causal, pattern=pattern, scale=0.25)[0]

        real = dense_reference(q, k, v, seg, causal=causal, pattern=pattern, scale=0.25)[1]
        w = weight * real[..., None, None]  # rows without any key (padding queries) are undefined
        got, grads = output_and_grads(chunked, w)(q, k, v)
        want, ref = output_and_grads(dense, w)(q, k, v)
        np.testing.assert_allclose(np.where(real[..., None, None], got, 0),
                                   np.where(real[..., None, None], want, 0), atol=1e-5)
        for g, r in zip(grads, ref):
            np.testing.assert_allclose(g, r, atol=1e-5)


def test_alibi_inside_the_blocks():
    from jaxformer.nn.positions import alibi_bias, alibi_slopes

    q, k, v, w = inputs(t=64, kv_heads=4)
    index = jnp.broadcast_to(jnp.arange(64), (2, 64))
    bias = alibi_bias(4, index, index, True)
    mask = attention_mask(index, index, None, None, causal=True)
    want = einsum_attention(q, k, v, mask, bias, scale=0.25)[0]
    got = chunked_attention(q, k, v, scale=0.25, alibi_slopes=alibi_slopes(4), block=16)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_cost_follows_the_live_blocks():
    """Causal skips about half the blocks; the sparse patterns at 4k tokens keep a small share."""
    t = 4096
    assert 0.5 <= live_fraction(None, True, t) < 0.52
    assert live_fraction(None, False, t) == 1.0
    assert live_fraction(SparsePattern("sliding", window=256), True, t) < 0.1
    assert live_fraction(SparsePattern("strided", stride=64), True, t) < 0.1
    assert live_fraction(SparsePattern("fixed", stride=256, summary=16), True, t) < 0.25
    # Steps of the scan: live pairs spread over lanes (no lane idles for more than one query
    # block's worth), so a causal plan takes about half the dense steps x lanes.
    (part,) = plan(None, True, t, t)
    s = part.schedule
    assert s.valid.sum() == s.live_pairs
    assert s.valid.size <= 1.1 * s.live_pairs


def test_memory_grows_linearly():
    """XLA's compiled temporaries for forward + backward: doubling T doubles chunked attention's
    (O(T)) and quadruples dense attention's (O(T^2))."""
    def temp_bytes(fn, t):
        x = jax.ShapeDtypeStruct((1, t, 4, 32), jnp.float32)
        grad = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), (0, 1, 2))
        return jax.jit(grad).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

    chunked = lambda q, k, v: chunked_attention(q, k, v, scale=0.1)  # noqa: E731
    dense = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    c1, c2 = temp_bytes(chunked, 2048), temp_bytes(chunked, 4096)
    d1, d2 = temp_bytes(dense, 2048), temp_bytes(dense, 4096)
    assert c2 / c1 < 2.5
    assert d2 / d1 > 3.5
    assert c2 < d2 / 8


def test_config_patterns_and_errors():
    assert make_pattern(None) is None
    assert make_pattern(64) == SparsePattern("sliding", window=64)
    assert make_pattern(64, "global_local", global_tokens=2).global_tokens == 2
    with pytest.raises(ValueError, match="cannot be combined"):
        make_pattern(64, "strided", stride=8)
    with pytest.raises(ValueError, match="needs a positive stride"):
        SparsePattern("strided")
    with pytest.raises(ValueError, match="summary"):
        SparsePattern("fixed", stride=4, summary=8)
