"""The attention a GPU or TPU runs, run here: under `platform.compute_as("gpu" | "tpu")` the CPU
makes the accelerator's choices (the functions the accelerator calls, not copies), and each
result is checked against attention written out pair by pair (support/attention_reference.py).

- `xla` on an accelerator: `jax.nn.dot_product_attention` with its built-in causal mask (no
  explicit mask) for unpacked causal self-attention, an explicit mask otherwise; on a CPU the
  same module takes the blocked causal path instead, so without this nothing would run it.
- `auto` on a TPU: splash (Pallas, interpreted here) with causal, full, packed, sliding-window
  and sparse-pattern masks.
- `auto` on a GPU: the Pallas GPU kernel (interpreted) for float32, including its non-causal
  case; cuDNN for bfloat16, whose arguments (the sliding window's bounds) go through XLA's
  implementation of the same `jax.nn.dot_product_attention` call.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.nn import Attention, attention_kernels, attention_ops
from jaxformer.nn.attention_kernels import Case, cudnn_arguments
from jaxformer.nn.platform import compute_as, compute_platform
from jaxformer.nn.sparse_attention import SparsePattern
from support.attention_reference import indices, naive_attention, naive_mask, pattern_pair

T = 128  # splash's TPU block: the shortest length the TPU choice accepts
PACKED = np.array([[1] * 50 + [2] * 70 + [0] * 8, [1] * T])  # two documents + padding; one row


def qkv(seed, heads=4, kv_heads=2, dim=32, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (2, T, heads, dim))
    k = jax.random.normal(keys[1], (2, T, kv_heads, dim))
    v = jax.random.normal(keys[2], (2, T, kv_heads, dim))
    return tuple(a.astype(dtype) for a in (q, k, v))


def reference(q, k, v, segments, *, causal, pattern=None, scale):
    """(naive output, which query rows see some key)."""
    pos = indices(2, T)
    window = pattern.window if pattern is not None and pattern.kind == "sliding" else None
    allowed = None if pattern is None or pattern.kind == "sliding" else pattern_pair(pattern)
    mask = naive_mask(pos, pos, segments, segments, causal=causal, window=window, allowed=allowed)
    f32 = [np.asarray(a, np.float32) for a in (q, k, v)]
    return naive_attention(*f32, mask, scale=scale), mask.any(-1)


def spy(monkeypatch, module, name):
    """Record the keyword arguments of each call to module.name, then call it."""
    calls = []
    real = getattr(module, name)

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recorded)
    return calls


def test_compute_as_sets_the_platform_and_rejects_unknown_names():
    host = compute_platform()
    with compute_as("tpu"):
        assert compute_platform() == "tpu"
        with compute_as("gpu"):
            assert compute_platform() == "gpu"
        assert compute_platform() == "tpu"
    assert compute_platform() == host
    with pytest.raises(ValueError, match="use one of"):
        with compute_as("npu"):
            pass


# --- `xla` through the Attention module, as a GPU or TPU runs it


XLA_CASES = [  # (name, segments, causal, sliding window)
    ("causal", None, True, None),  # the built-in causal mask: the path every unpacked decoder takes
    ("packed_causal", PACKED, True, None),
    ("bidirectional", None, False, None),
    ("sliding_window", None, True, 9),
]


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@pytest.mark.parametrize("name,segments,causal,window", XLA_CASES, ids=[c[0] for c in XLA_CASES])
def test_xla_module_path_on_accelerators(monkeypatch, platform, name, segments, causal, window):
    blocked = spy(monkeypatch, attention_ops, "blocked_causal_attention")
    xla = spy(monkeypatch, attention_ops, "xla_attention")
    m = Attention(64, 4, num_kv_heads=2, causal=causal, sliding_window=window,
                  implementation="xla", use_bias=True, rngs=nnx.Rngs(3))
    x = jax.random.normal(jax.random.key(4), (2, T, 64))
    positions = jnp.asarray(indices(2, T))
    seg = None if segments is None else jnp.asarray(segments)
    graphdef, state = nnx.split(m)
    with compute_as(platform):
        got = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, positions, seg)[0])(state, x)
    assert not blocked and len(xla) == 1
    # Only the plain causal case leaves the mask to the kernel (cuDNN's fastest form).
    plain = causal and segments is None and window is None
    assert xla[0]["is_causal"] is plain
    q, k, v = m.query(x), m.key(x), m.value(x)
    pattern = None if window is None else SparsePattern("sliding", window=window)
    want, real = reference(q, k, v, segments, causal=causal, pattern=pattern, scale=m.scale)
    want = m.out(jnp.asarray(want, jnp.float32))
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-5)


# --- `auto` on a TPU: splash, interpreted


SPLASH_CASES = [  # (name, segments, causal, pattern)
    ("causal_packed", PACKED, True, None),
    ("full_packed", PACKED, False, None),
    ("sliding_causal", None, True, SparsePattern("sliding", window=24)),
    ("sliding_both_sides", PACKED, False, SparsePattern("sliding", window=24)),
    ("strided_causal", None, True, SparsePattern("strided", stride=16)),
    ("strided_full", PACKED, False, SparsePattern("strided", stride=16)),
    ("fixed_causal", PACKED, True, SparsePattern("fixed", stride=32, summary=4)),
    ("global_local_full", None, False, SparsePattern("global_local", window=9, global_tokens=5)),
]


def run_auto(platform, q, k, v, segments, *, causal, pattern, scale):
    seg = None if segments is None else jnp.asarray(segments)
    with compute_as(platform):
        attend = jax.jit(lambda q, k, v: attention_kernels.self_attention(
            q, k, v, seg, requested="auto", causal=causal, pattern=pattern, scale=scale))
        return np.asarray(attend(q, k, v), np.float32)


@pytest.mark.parametrize("name,segments,causal,pattern", SPLASH_CASES,
                         ids=[c[0] for c in SPLASH_CASES])
def test_splash_is_what_auto_runs_on_a_tpu(monkeypatch, name, segments, causal, pattern):
    splash = spy(monkeypatch, attention_kernels, "splash_attention")
    q, k, v = qkv(0)
    got = run_auto("tpu", q, k, v, segments, causal=causal, pattern=pattern, scale=0.2)
    assert len(splash) == 1
    want, real = reference(q, k, v, segments, causal=causal, pattern=pattern, scale=0.2)
    np.testing.assert_allclose(got[real], want[real], atol=2e-5)


def test_splash_through_the_module_with_a_sparse_pattern(monkeypatch):
    """`attention_impl=auto` in a model on a TPU: the module's dispatch reaches splash."""
    splash = spy(monkeypatch, attention_kernels, "splash_attention")
    pattern = SparsePattern("strided", stride=16)
    m = Attention(64, 4, num_kv_heads=2, pattern=pattern, implementation="auto", rngs=nnx.Rngs(5))
    x = jax.random.normal(jax.random.key(6), (2, T, 64))
    positions = jnp.asarray(indices(2, T))
    graphdef, state = nnx.split(m)
    with compute_as("tpu"):
        got = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, positions)[0])(state, x)
    assert len(splash) == 1
    want, _ = reference(m.query(x), m.key(x), m.value(x), None, causal=True, pattern=pattern,
                        scale=m.scale)
    np.testing.assert_allclose(got, m.out(jnp.asarray(want, jnp.float32)), atol=2e-5)


# --- `auto` on a GPU: the Pallas kernel for float32, cuDNN's call for bfloat16


@pytest.mark.parametrize("causal", [False, True])
def test_pallas_gpu_is_what_auto_runs_for_float32_on_a_gpu(monkeypatch, causal):
    pallas = spy(monkeypatch, attention_kernels, "pallas_gpu_attention")
    q, k, v = qkv(1)
    got = run_auto("gpu", q, k, v, PACKED, causal=causal, pattern=None, scale=0.2)
    assert len(pallas) == 1
    want, real = reference(q, k, v, PACKED, causal=causal, scale=0.2)
    np.testing.assert_allclose(got[real], want[real], atol=2e-5)


@pytest.mark.parametrize("pattern", [None, SparsePattern("sliding", window=17)])
def test_cudnn_call_for_bfloat16_on_a_gpu(monkeypatch, pattern):
    cudnn = spy(monkeypatch, attention_kernels, "cudnn_attention")
    q, k, v = qkv(2, dtype=jnp.bfloat16)
    got = run_auto("gpu", q, k, v, None, causal=True, pattern=pattern, scale=0.2)
    assert len(cudnn) == 1
    want, _ = reference(q, k, v, None, causal=True, pattern=pattern, scale=0.2)
    np.testing.assert_allclose(got, want, atol=3e-2)


def test_cudnn_window_bounds_follow_jax_documented_convention():
    """JAX documents `local_window_size=(left, right)` by example: with (3, 2), token c of
    [0, 1, 2, 3, 4, 5, c, 7, 8, 9] sees [3, 4, 5, c, 7, 8]. Our window of w (the query and the
    w - 1 before it) must therefore be (w - 1, 0)."""
    case = Case(q_len=T, heads=4, kv_heads=2, head_dim=32, dtype="bfloat16", causal=True,
                pattern=SparsePattern("sliding", window=5), segments=False, alibi=False,
                backend="gpu")
    args = cudnn_arguments(case, 0.25)
    assert args == dict(scale=0.25, is_causal=True, local_window_size=(4, 0))
    documented_left, documented_right = 3, 2
    seen = [t for t in range(10) if 6 - documented_left <= t <= 6 + documented_right]
    assert seen == [3, 4, 5, 6, 7, 8]
    left, right = args["local_window_size"]
    ours = [t for t in range(10) if 6 - left <= t <= 6 + right]
    assert ours == [t for t in range(10) if 0 <= 6 - t < 5]  # |query - key| < 5, causal
