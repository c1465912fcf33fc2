"""Choosing an attention kernel: what `auto` picks per backend and shape, that a kernel asked for
but unable to run a case falls back with its reason logged, and the Pallas kernels' numerics in
interpret mode (no GPU or TPU here: their selection logic is what can be tested on hardware we
lack)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.nn import Attention, attention_kernels
from jaxformer.nn.attention_kernels import Case, auto_choice, resolve
from jaxformer.nn.sparse_attention import SparsePattern


def case(**changes):
    base = dict(q_len=4096, heads=8, kv_heads=8, head_dim=64, dtype="bfloat16", causal=True,
                pattern=None, segments=False, alibi=False, backend="gpu")
    return Case(**{**base, **changes})


def test_auto_picks_per_backend_and_shape(monkeypatch):
    monkeypatch.setattr(attention_kernels, "_gpu_capability", lambda: 9.0)
    assert auto_choice(case())[0] == "cudnn"
    assert auto_choice(case(pattern=SparsePattern("sliding", window=256)))[0] == "cudnn"
    # float32 and packed rows are outside cuDNN's flash path: JAX's Pallas GPU kernel takes them.
    impl, why = auto_choice(case(dtype="float32"))
    assert impl == "pallas_gpu" and "bfloat16" in why
    impl, why = auto_choice(case(segments=True))
    assert impl == "pallas_gpu" and "segment ids" in why
    # Neither covers a strided pattern: the chunked computation does.
    assert auto_choice(case(pattern=SparsePattern("strided", stride=64)))[0] == "chunked"
    assert auto_choice(case(backend="tpu"))[0] == "splash"
    assert auto_choice(case(backend="tpu", q_len=1000))[0] == "chunked"
    assert auto_choice(case(backend="cpu", q_len=256))[0] == "xla"
    assert auto_choice(case(backend="cpu", q_len=4096))[0] == "chunked"
    assert auto_choice(case(backend="cpu", q_len=256, pattern=SparsePattern("fixed", stride=64,
                                                                           summary=8)))[0] == "chunked"


def test_unsupported_kernel_falls_back_with_the_reason_logged(caplog):
    with caplog.at_level(logging.INFO, logger="jaxformer.attention"):
        assert resolve("cudnn", case(backend="cpu", dtype="float32", q_len=64)) == "xla"
        assert resolve("splash", case(backend="cpu", q_len=100)) in ("xla", "chunked")
        assert resolve("auto", case(backend="cpu", q_len=8192)) == "chunked"
    text = caplog.text
    assert "attention_impl=cudnn cannot run this case, falling back to xla: cuDNN needs an NVIDIA GPU" in text
    assert "splash attention needs a length that is a multiple of 128" in text
    assert "attention_impl=auto: chunked" in text
    assert "WARNING" in [r.levelname for r in caplog.records if "falling back" in r.message][0]


def _module(impl, *, pattern=None, kv_heads=2, position="none", causal=True):
    return Attention(32, 4, num_kv_heads=kv_heads, implementation=impl, pattern=pattern,
                     position=position, causal=causal, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("impl,pattern,position", [
    ("chunked", None, "rope"),
    ("chunked", SparsePattern("fixed", stride=8, summary=2), "none"),
    ("chunked", None, "alibi"),
    ("auto", SparsePattern("strided", stride=8), "none"),
])
def test_attention_module_kernels_equal_the_dense_path(impl, pattern, position):
    x = jax.random.normal(jax.random.key(1), (2, 48, 32))
    positions = jnp.broadcast_to(jnp.arange(48), (2, 48))
    seg = jnp.asarray([[1] * 30 + [2] * 18, [1] * 40 + [0] * 8])
    dense = _module("xla", pattern=pattern, position=position)
    other = _module(impl, pattern=pattern, position=position)
    want, _ = dense(x, positions, seg)
    got, _ = other(x, positions, seg)
    real = np.asarray(seg != 0)[..., None]
    np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=1e-5)


def _pallas_reference(q, k, v, seg, causal):
    t = q.shape[1]
    mask = (jnp.tril(jnp.ones((t, t), bool)) if causal else jnp.ones((t, t), bool))[None]
    mask = mask & (seg[:, :, None] == seg[:, None, :])
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=0.125)


@pytest.mark.parametrize("kernel", ["splash", "pallas_gpu"])
def test_pallas_kernels_in_interpret_mode(kernel):
    """Splash (TPU) and JAX's Pallas GPU kernel, run by the Pallas interpreter on the CPU, equal
    dense attention with causal and segment masks, forward and gradients (GQA included)."""
    q = jax.random.normal(jax.random.key(0), (1, 128, 4, 64)) * 0.5
    k = jax.random.normal(jax.random.key(1), (1, 128, 2, 64)) * 0.5
    v = jax.random.normal(jax.random.key(2), (1, 128, 2, 64))
    seg = jnp.asarray([[1] * 80 + [2] * 48])
    c = Case(q_len=128, heads=4, kv_heads=2, head_dim=64, dtype="float32", causal=True,
             pattern=None, segments=True, alibi=False, backend="cpu")
    run = {"splash": attention_kernels.splash_attention,
           "pallas_gpu": attention_kernels.pallas_gpu_attention}[kernel]
    got_fn = lambda q, k, v: run(q, k, v, seg, case=c, scale=0.125)  # noqa: E731
    ref_fn = lambda q, k, v: _pallas_reference(q, k, v, seg, True)  # noqa: E731
    np.testing.assert_allclose(got_fn(q, k, v), ref_fn(q, k, v), atol=1e-5)
    w = jax.random.normal(jax.random.key(3), q.shape)
    g = jax.grad(lambda *a: jnp.sum(got_fn(*a) * w), (0, 1, 2))(q, k, v)
    r = jax.grad(lambda *a: jnp.sum(ref_fn(*a) * w), (0, 1, 2))(q, k, v)
    for a, b in zip(g, r):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_splash_sliding_window_in_interpret_mode():
    q = jax.random.normal(jax.random.key(0), (1, 128, 2, 64)) * 0.5
    k = jax.random.normal(jax.random.key(1), (1, 128, 2, 64)) * 0.5
    v = jax.random.normal(jax.random.key(2), (1, 128, 2, 64))
    pattern = SparsePattern("sliding", window=40)
    c = Case(q_len=128, heads=2, kv_heads=2, head_dim=64, dtype="float32", causal=True,
             pattern=pattern, segments=False, alibi=False, backend="cpu")
    got = attention_kernels.splash_attention(q, k, v, None, case=c, scale=0.125)
    i, j = np.arange(128)[:, None], np.arange(128)[None, :]
    mask = jnp.asarray((i >= j) & (i - j < 40))[None, None]
    want = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=0.125)
    np.testing.assert_allclose(got, want, atol=1e-5)
