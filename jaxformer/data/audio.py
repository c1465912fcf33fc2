"""Audio as Whisper reads it: log-mel spectrograms of 16 kHz mono waveforms.

    features = log_mel_spectrogram(waveform)            # [B, samples] -> [B, 80, 3000]

The recipe is Whisper's (and HF's `WhisperFeatureExtractor`'s): each waveform padded with zeros
or cut to `num_samples` (30 s), a short-time Fourier transform with a periodic Hann window of
400 samples every 160 samples (25 ms windows, 10 ms hops; frames centred, the signal reflected at
both ends), the power spectrum through a bank of `n_mels` triangular mel filters (Slaney's mel
scale and area normalisation, 0 to 8 kHz), log10 floored at 1e-10, then floored again at the
example's maximum less 8 (80 dB of range), scaled as (x + 4) / 4, and the last frame dropped so
30 s give 3000 frames.

The filter bank (`mel_filter_bank`) is computed here in numpy from the formulas (Slaney's Auditory
Toolbox: linear below 1 kHz at 200/3 Hz per mel, logarithmic above at a ratio of 6.4 per 27 mels).
Everything else is jax, so `log_mel_spectrogram` runs under `jax.jit` with `n_mels` and
`num_samples` static.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # 480000: Whisper's 30 s window

# Slaney's mel scale: 3 mels per 200 Hz up to 1 kHz (15 mels), then log-spaced, 27 mels per
# factor 6.4 in frequency.
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
    """Slaney's mel scale (not HTK's 2595 log10(1 + f/700))."""
    hz = np.asarray(hz, np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    log = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz >= _BREAK_HZ, log, linear)


def mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    linear = mel * _LINEAR_HZ_PER_MEL
    log = _BREAK_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _BREAK_MEL) - _BREAK_MEL))
    return np.where(mel >= _BREAK_MEL, log, linear)


def mel_filter_bank(n_mels: int = 80, *, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                    min_hz: float = 0.0, max_hz: float = 8000.0) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] float32: filter m is a triangle over the FFT bins' frequencies,
    rising from mel point m to its peak at point m + 1 and falling to point m + 2, the n_mels + 2
    points equally spaced in mels from min_hz to max_hz; each triangle is scaled by
    2 / (its width in Hz), so every filter has the same area (Slaney's normalisation)."""
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    points = mel_to_hz(np.linspace(hz_to_mel(min_hz), hz_to_mel(max_hz), n_mels + 2))
    lower, peak, upper = points[:-2], points[1:-1], points[2:]
    rising = (bins[:, None] - lower) / (peak - lower)
    falling = (upper - bins[:, None]) / (upper - peak)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return (triangles * (2.0 / (upper - lower))).astype(np.float32)


def hann_window(length: int = N_FFT) -> np.ndarray:
    """The periodic Hann window (torch.hann_window's default): 0.5 - 0.5 cos(2 pi n / length)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)


def fit_length(waveform: jax.Array, num_samples: int) -> jax.Array:
    """[B, samples] -> [B, num_samples]: zeros appended, or the end cut off."""
    samples = waveform.shape[-1]
    if samples >= num_samples:
        return waveform[..., :num_samples]
    return jnp.pad(waveform, [(0, 0)] * (waveform.ndim - 1) + [(0, num_samples - samples)])


@functools.partial(jax.jit, static_argnames=("n_mels", "num_samples"))
def log_mel_spectrogram(waveform: jax.Array, n_mels: int = 80,
                        num_samples: int = CHUNK_SAMPLES) -> jax.Array:
    """waveform float32 [B, samples] at 16 kHz (values in [-1, 1]) -> features float32
    [B, n_mels, num_samples // 160], as Whisper's encoder takes them (see the module docstring)."""
    waveform = jnp.asarray(waveform, jnp.float32)
    if waveform.ndim != 2:
        raise ValueError(f"waveform must be [batch, samples], got shape {waveform.shape}")
    x = fit_length(waveform, num_samples)
    half = N_FFT // 2
    x = jnp.pad(x, [(0, 0), (half, half)], mode="reflect")  # centred frames
    frames = 1 + num_samples // HOP_LENGTH
    index = np.arange(frames)[:, None] * HOP_LENGTH + np.arange(N_FFT)[None, :]
    windows = x[:, index] * hann_window()  # [B, frames, n_fft]
    spectrum = jnp.fft.rfft(windows, n=N_FFT, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # [B, frames, n_fft // 2 + 1]
    mel = jnp.einsum("bfk,km->bmf", power[:, :-1], mel_filter_bank(n_mels),
                     precision=jax.lax.Precision.HIGHEST)
    log_mel = jnp.log10(jnp.maximum(mel, 1e-10))
    log_mel = jnp.maximum(log_mel, log_mel.max(axis=(1, 2), keepdims=True) - 8.0)
    return (log_mel + 4.0) / 4.0
