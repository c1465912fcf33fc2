"""Position schemes that have no parameters: sinusoidal (2017), RoPE (with Llama-3.1 scaling), ALiBi.

Each is a pure function of explicit `positions`, so packed documents (positions restarting at 0 in
every document) and KV-cache decoding (positions past the prompt) need nothing special. The learned
table lives in `embedding.LearnedPositions`.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal(positions: jax.Array, dim: int, max_timescale: float = 10000.0, *,
               interleave: bool = True) -> jax.Array:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...) (Vaswani et al. 2017, 3.5).
    `interleave=False` puts the sines in the first half and the cosines in the second (tensor2tensor,
    fairseq and Marian lay it out so).

    positions: [batch, time] -> [batch, time, dim] float32.
    """
    inv_timescale = max_timescale ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = positions[..., None].astype(jnp.float32) * inv_timescale.astype(np.float32)
    if not interleave:
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[..., :dim]
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # interleave sin/cos
    return pe.reshape(*positions.shape, -1)[..., :dim]


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3.1 frequency scaling: long wavelengths are slowed by `factor`, short ones kept,
    and the band in between interpolated (Meta's `apply_scaling`, HF's rope_type="llama3")."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> np.ndarray:
    """theta^(-2i/d) for i < d/2, optionally rescaled; a trace-time numpy constant [head_dim // 2]."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if scaling is None:
        return inv_freq.astype(np.float32)
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = scaling.original_max_position / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_max_position / scaling.high_freq_factor
    smooth = (scaling.original_max_position / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    interpolated = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    in_band = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(in_band, interpolated, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float = 10000.0,
               scaling: RopeScaling | None = None) -> jax.Array:
    """Rotate query or key vectors by their positions (Su et al. 2021), halves layout as in Llama:
    dimension i pairs with i + d/2 (not the interleaved 2i, 2i+1 of the paper).

    x: [batch, time, heads, head_dim]; positions: [batch, time].
    """
    inv_freq = rope_inverse_frequencies(x.shape[-1], theta, scaling)
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [batch, time, head_dim/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head slopes of ALiBi (Press et al. 2022): a geometric series 2^(-8/n), 2^(-16/n), ...
    For a head count that is not a power of two, the paper's recipe: take the slopes of the
    nearest lower power of two, then every other slope of the next power of two."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return np.asarray(power_of_two(num_heads), np.float32)
    lower = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * lower)[0::2][: num_heads - lower]
    return np.asarray(power_of_two(lower) + extra, np.float32)


def alibi_bias(num_heads: int, q_index: jax.Array, k_index: jax.Array, causal: bool) -> jax.Array:
    """Additive attention bias -slope * distance: [batch, heads, q_time, k_time].

    q_index: [batch, q_time], k_index: [batch, k_time] are token indices in the key/value sequence.
    Causal models penalise (q - k); bidirectional ones penalise |q - k|.
    """
    distance = (q_index[:, :, None] - k_index[:, None, :]).astype(jnp.float32)
    if not causal:
        distance = jnp.abs(distance)
    return -alibi_slopes(num_heads)[None, :, None, None] * distance[:, None, :, :]
