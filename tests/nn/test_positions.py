"""Position schemes against their papers: RoPE (Su et al. 2021) and Llama-3.1 frequency scaling
(Meta's `apply_scaling`), sinusoidal (Vaswani et al. 2017, section 3.5), ALiBi (Press et al. 2022)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.nn.positions import (RopeScaling, alibi_bias, alibi_slopes, apply_rope,
                                    rope_inverse_frequencies, sinusoidal)

LLAMA31 = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=8192)


def rope_at(x, position, theta=10000.0, scaling=None):
    """Rotate one vector x [head_dim] as if it sat at `position`."""
    out = apply_rope(jnp.asarray(x, jnp.float32)[None, None, None, :], jnp.array([[position]]),
                     theta, scaling)
    return np.asarray(out[0, 0, 0], np.float64)


@pytest.mark.parametrize("theta,scaling", [(10000.0, None), (500000.0, LLAMA31)])
def test_rope_score_depends_only_on_offset(theta, scaling):
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 64))
    for m, n in [(5, 2), (0, 7), (13, 13), (100, 37)]:
        reference = rope_at(q, m, theta, scaling) @ rope_at(k, n, theta, scaling)
        for shift in (1, 3, 50, 1000, 9000):
            shifted = rope_at(q, m + shift, theta, scaling) @ rope_at(k, n + shift, theta, scaling)
            np.testing.assert_allclose(shifted, reference, rtol=1e-3, atol=1e-3)
    # and it does depend on the offset (the rotation is not the identity)
    at_zero = rope_at(q, 0, theta) @ rope_at(k, 0, theta)
    assert abs(rope_at(q, 9, theta) @ rope_at(k, 0, theta) - at_zero) > 1e-3


def test_rope_matches_rotate_half_reference():
    """The Llama/HF form: x * cos + rotate_half(x) * sin with cos/sin of (position * inv_freq)
    repeated over both halves; inv_freq_i = theta^(-2i/d)."""
    rng = np.random.default_rng(1)
    batch, time, heads, dim = 2, 5, 3, 16
    x = rng.standard_normal((batch, time, heads, dim)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [7, 8, 0, 1, 2]])
    got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(positions), 10000.0))
    want = np.zeros_like(x, dtype=np.float64)
    for b in range(batch):
        for t in range(time):
            for h in range(heads):
                v = x[b, t, h].astype(np.float64)
                rotated = np.concatenate([-v[dim // 2:], v[:dim // 2]])
                for i in range(dim):
                    angle = positions[b, t] * 10000.0 ** (-2 * (i % (dim // 2)) / dim)
                    want[b, t, h, i] = v[i] * math.cos(angle) + rotated[i] * math.sin(angle)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # position 0 is the identity and every rotation keeps the norm
    np.testing.assert_allclose(got[0, 0], x[0, 0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def meta_apply_scaling(freqs, scale_factor, low_freq_factor, high_freq_factor, old_context_len):
    """A transcription of `apply_scaling` in Meta's llama-models (Llama 3.1 reference code)."""
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    new_freqs = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            new_freqs.append(freq)
        elif wavelen > low_freq_wavelen:
            new_freqs.append(freq / scale_factor)
        else:
            assert low_freq_wavelen != high_freq_wavelen
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            new_freqs.append((1 - smooth) * freq / scale_factor + smooth * freq)
    return np.array(new_freqs)


@pytest.mark.parametrize("head_dim,theta,scaling", [
    (128, 500000.0, LLAMA31),  # Llama 3.1 8B / 70B / 405B
    (64, 500000.0, RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position=8192)),  # Llama 3.2 1B / 3B
    (64, 10000.0, RopeScaling(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,
                              original_max_position=256)),
])
def test_llama31_scaling_matches_meta(head_dim, theta, scaling):
    base = [1.0 / theta ** (i / head_dim) for i in range(0, head_dim, 2)]
    want = meta_apply_scaling(base, scaling.factor, scaling.low_freq_factor,
                              scaling.high_freq_factor, scaling.original_max_position)
    got = rope_inverse_frequencies(head_dim, theta, scaling)
    assert got.shape == (head_dim // 2,)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the case exercises all three branches: kept, divided by the factor, and interpolated
    base = np.array(base)
    kept = np.isclose(want, base, rtol=1e-12)
    slowed = np.isclose(want, base / scaling.factor, rtol=1e-12)
    assert kept.any() and slowed.any() and (~kept & ~slowed).any()
    np.testing.assert_allclose(rope_inverse_frequencies(head_dim, theta), base, rtol=1e-6)


def test_sinusoidal_matches_paper():
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))."""
    d_model = 16
    positions = np.array([[0, 1, 2, 3, 50, 511], [7, 0, 1, 2, 100, 3]])
    got = np.asarray(sinusoidal(jnp.asarray(positions), d_model))
    assert got.shape == (2, 6, d_model)
    want = np.zeros((2, 6, d_model))
    for b in range(2):
        for t in range(6):
            pos = positions[b, t]
            for i in range(d_model // 2):
                want[b, t, 2 * i] = math.sin(pos / 10000 ** (2 * i / d_model))
                want[b, t, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / d_model))
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_alibi_slopes_match_paper():
    # 8 heads: the geometric sequence 1/2^1 ... 1/2^8 (paper, section 3)
    np.testing.assert_allclose(alibi_slopes(8), [1 / 2 ** i for i in range(1, 9)], rtol=1e-7)
    # 16 heads: 1/sqrt(2), 1/2, ..., 1/2^8
    np.testing.assert_allclose(alibi_slopes(16), [2 ** (-0.5 * i) for i in range(1, 17)], rtol=1e-6)
    # Not a power of two: the authors' `get_slopes` takes the 4-head slopes, then every other
    # slope of the 8-head series. 6 heads -> 1/4, 1/16, 1/64, 1/256, then 1/2, 1/8.
    np.testing.assert_allclose(alibi_slopes(6), [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8], rtol=1e-7)
    # 12 heads -> the 8-head series, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 from the 16-head series
    np.testing.assert_allclose(alibi_slopes(12), [1 / 2 ** i for i in range(1, 9)]
                               + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5], rtol=1e-6)


def test_alibi_bias_is_minus_slope_times_distance():
    q_index = jnp.array([[3, 4]])
    k_index = jnp.array([[0, 1, 2, 3, 4]])
    slopes = [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    causal = np.asarray(alibi_bias(6, q_index, k_index, causal=True))
    bidirectional = np.asarray(alibi_bias(6, q_index, k_index, causal=False))
    assert causal.shape == (1, 6, 2, 5)
    for h in range(6):
        for i, q in enumerate([3, 4]):
            for j, k in enumerate(range(5)):
                assert causal[0, h, i, j] == pytest.approx(-slopes[h] * (q - k))
                assert bidirectional[0, h, i, j] == pytest.approx(-slopes[h] * abs(q - k))
