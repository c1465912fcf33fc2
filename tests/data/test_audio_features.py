"""Whisper's log-mel features (`jaxformer.data.audio`) against transformers' WhisperFeatureExtractor
(built from its constructor, 80 and 128 mel bins) within 1e-4 on odd lengths, silence, clipping,
a 5 s and a 31 s clip and a batch mixing them; the mel filter bank against Slaney's formulas
worked by hand."""

import jax
import numpy as np
import pytest

from jaxformer.data.audio import hann_window, hz_to_mel, log_mel_spectrogram, mel_filter_bank, mel_to_hz

RATE = 16000


def clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t5 = np.arange(5 * RATE) / RATE
    t31 = np.arange(31 * RATE) / RATE
    speechy = 0.2 * np.sin(2 * np.pi * 220 * t5) * np.sin(2 * np.pi * 3 * t5) ** 2
    return {
        "odd length": (0.3 * rng.uniform(-1, 1, 12345)).astype(np.float32),
        "one sample": np.array([0.5], np.float32),
        "silence": np.zeros(RATE, np.float32),
        "clipped at +-1": np.clip(3 * np.sin(2 * np.pi * 440 * t5[:2 * RATE + 7]), -1, 1)
        .astype(np.float32),
        "5 s": (speechy + 0.01 * rng.standard_normal(t5.size)).astype(np.float32),
        "31 s (cut to 30)": (0.1 * np.sin(2 * np.pi * 300 * t31)
                             + 0.02 * rng.standard_normal(t31.size)).astype(np.float32),
    }


@pytest.fixture(scope="module", params=[80, 128])
def extractor(request):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=request.param)


def hf_features(extractor, waveforms):
    return extractor(waveforms, sampling_rate=RATE, return_tensors="np").input_features


@pytest.mark.parametrize("name", list(clips()))
def test_each_clip_matches_hf(extractor, name):
    clip = clips()[name]
    ours = np.asarray(log_mel_spectrogram(clip[None], n_mels=extractor.feature_size))
    ref = hf_features(extractor, clip)
    assert ours.shape == ref.shape == (1, extractor.feature_size, 3000)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_a_batch_mixing_them_matches_hf(extractor):
    waveforms = list(clips().values())
    longest = max(len(w) for w in waveforms)
    batch = np.stack([np.pad(w, (0, longest - len(w))) for w in waveforms])
    ours = np.asarray(log_mel_spectrogram(batch, n_mels=extractor.feature_size))
    np.testing.assert_allclose(ours, hf_features(extractor, waveforms), atol=1e-4, rtol=0)
    # Each row is floored at its own maximum - 8, so silence stays at (log10(1e-10) + 4) / 4.
    assert np.all(ours[2] == -1.5)


def test_silence_and_the_80_db_floor():
    out = np.asarray(log_mel_spectrogram(np.zeros((1, 800), np.float32), num_samples=800))
    assert out.shape == (1, 80, 5) and np.all(out == (-10 + 4) / 4)
    loud = np.asarray(log_mel_spectrogram(np.ones((1, RATE), np.float32) * 0.9))
    assert loud.max() - loud.min() <= 2.0 + 1e-6  # (max - (max - 8)) / 4


def test_length_and_shape_settings():
    w = np.random.default_rng(1).uniform(-1, 1, (3, 5000)).astype(np.float32)
    assert log_mel_spectrogram(w, n_mels=40, num_samples=4000).shape == (3, 40, 25)
    # Cutting then computing equals computing on the cut waveform.
    np.testing.assert_array_equal(np.asarray(log_mel_spectrogram(w, num_samples=4000)),
                                  np.asarray(log_mel_spectrogram(w[:, :4000], num_samples=4000)))
    jitted = jax.jit(lambda x: log_mel_spectrogram(x, n_mels=80, num_samples=4000))
    np.testing.assert_allclose(np.asarray(jitted(w)),
                               np.asarray(log_mel_spectrogram(w, num_samples=4000)), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        log_mel_spectrogram(w[0])


def test_slaney_mel_scale_by_hand():
    # Linear below 1 kHz: 200/3 Hz per mel, so 1 kHz is mel 15; above, 27 mels per factor 6.4.
    np.testing.assert_allclose(hz_to_mel([0, 200, 1000, 6400, 8000]),
                               [0, 3, 15, 42, 15 + 27 * np.log(8) / np.log(6.4)], rtol=1e-12)
    hz = np.array([0, 37.5, 999.0, 1000, 1234.5, 7999.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filter_bank_by_hand(n_mels):
    bank = mel_filter_bank(n_mels)
    assert bank.shape == (201, n_mels) and bank.dtype == np.float32
    bins = np.arange(201) * 40.0  # 16 kHz / 400-point FFT: 40 Hz apart, 0 to 8 kHz
    top = 15 + 27 * np.log(8) / np.log(6.4)
    mels = np.linspace(0, top, n_mels + 2)
    points = np.where(mels < 15, mels * 200 / 3, 1000 * 6.4 ** ((mels - 15) / 27))
    for m in range(n_mels):
        lower, peak, upper = points[m], points[m + 1], points[m + 2]
        # Zero outside (lower, upper); the largest weight at the bin nearest the peak frequency.
        outside = (bins <= lower) | (bins >= upper)
        assert np.all(bank[outside, m] == 0)
        best = bins[np.argmax(bank[:, m])]
        assert abs(best - peak) <= 40.0
        # A bin's weight is the triangle's height there, the height at the peak being 2 / width.
        f = bins[np.argmax(bank[:, m])]
        height = 2 / (upper - lower) * min((f - lower) / (peak - lower), (upper - f) / (upper - peak))
        np.testing.assert_allclose(bank[:, m].max(), height, rtol=1e-5)
        if upper - lower > 400:  # wide enough for the bins to sample it: area 1 (in Hz)
            np.testing.assert_allclose(bank[:, m].sum() * 40.0, 1.0, rtol=0.02)
    # The periodic Hann window torch.hann_window(400) gives: zero at 0, one at the middle.
    w = hann_window()
    assert w[0] == 0 and w[200] == 1 and np.allclose(w[1:200], w[399:200:-1])


def test_filter_bank_equals_hf(extractor):
    np.testing.assert_allclose(mel_filter_bank(extractor.feature_size), extractor.mel_filters,
                               rtol=1e-6, atol=1e-9)
