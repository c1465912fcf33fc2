"""Keypad tones: a synthetic speech-recognition corpus generated in process, offline.

Each clip is a sequence of 1 to 6 DTMF keypad tones at 16 kHz, transcribed as its digits with a
space between them ("4 0 7"). A digit's tone is the sum of two sines, its keypad row's frequency
and its column's (the DTMF standard, ITU-T Q.23):

              1209 Hz  1336 Hz  1477 Hz
    697 Hz       1        2        3
    770 Hz       4        5        6
    852 Hz       7        8        9
    941 Hz                0

A clip starts with a silence of random length, then each tone lasts a random duration with a
random silent gap before the next one (so a repeated digit is two tones, not one long one); each
tone has its own random amplitude and starting phases, and the whole clip carries additive
Gaussian noise of a random level. Every draw is uniform in the ranges of `ToneSettings`.

Clip i of a split is drawn from a generator seeded by (seed, split, i): deterministic, and the
training and validation splits are different draws.

    corpus = TonesCorpus("train", seed=0)
    clip = corpus(7)            # clip.waveform float32 [samples], clip.text "4 0 7"
    tokenizer = tones_tokenizer()
"""

import dataclasses

import numpy as np

from jaxformer.data.tokenizers.char import CharTokenizer

SAMPLE_RATE = 16000
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0)
KEYPAD = ("123", "456", "789", " 0 ")
# digit -> (row frequency, column frequency)
DTMF_HZ = {key: (ROW_HZ[r], COLUMN_HZ[c])
           for r, keys in enumerate(KEYPAD) for c, key in enumerate(keys) if key != " "}
ALPHABET = " 0123456789"  # sorted by code point, as CharTokenizer requires; end token last
SPLIT_CODES = {"train": 0, "validation": 1}


def tones_tokenizer() -> CharTokenizer:
    """Characters " 0123456789" (ids 0-10: space, then the digits) and an end token (id 11)."""
    return CharTokenizer(ALPHABET, eos=True)


def transcript(digits: str) -> str:
    """"407" -> "4 0 7"."""
    return " ".join(digits)


def dtmf_tone(digit: str, samples: int, *, amplitude: float = 1.0,
              phases: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """float32 [samples]: the digit's two frequencies, each a sine of amplitude / 2."""
    t = np.arange(samples) / SAMPLE_RATE
    low, high = DTMF_HZ[digit]
    wave = (np.sin(2 * np.pi * low * t + phases[0]) + np.sin(2 * np.pi * high * t + phases[1]))
    return (0.5 * amplitude * wave).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ToneSettings:
    """Ranges [low, high] of the uniform draws. Durations in milliseconds; amplitude is a tone's
    peak (its two sines have half of it each); noise is the Gaussian noise's standard deviation."""

    min_digits: int = 1
    max_digits: int = 6
    tone_ms: tuple[float, float] = (40.0, 100.0)
    gap_ms: tuple[float, float] = (30.0, 80.0)
    lead_ms: tuple[float, float] = (0.0, 100.0)
    amplitude: tuple[float, float] = (0.1, 0.9)
    noise: tuple[float, float] = (0.0, 0.02)

    def __post_init__(self):
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, "
                             f"{self.max_digits}")
        for name in ("tone_ms", "gap_ms", "lead_ms", "amplitude", "noise"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {[low, high]}")
        if self.tone_ms[0] <= 0:
            raise ValueError(f"tone_ms must be positive, got {list(self.tone_ms)}")

    @property
    def max_samples(self) -> int:
        """The longest clip: the longest lead, tones and gaps."""
        ms = self.lead_ms[1] + self.max_digits * self.tone_ms[1] + (self.max_digits - 1) * self.gap_ms[1]
        return _samples(ms) + self.max_digits + 1  # each rounding adds at most one sample

    @property
    def max_text_len(self) -> int:
        """Characters of the longest transcript: digits and the spaces between them."""
        return 2 * self.max_digits - 1


def _samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000))


@dataclasses.dataclass(frozen=True)
class Clip:
    """waveform float32 [samples]; digits "407"; spans: each tone's (first, end) sample;
    noise: the noise's standard deviation."""

    waveform: np.ndarray
    digits: str
    spans: tuple[tuple[int, int], ...]
    noise: float

    @property
    def text(self) -> str:
        return transcript(self.digits)


def tone_clip(rng: np.random.Generator, settings: ToneSettings = ToneSettings()) -> Clip:
    """One clip drawn with `rng` (see the module docstring)."""
    s = settings
    count = int(rng.integers(s.min_digits, s.max_digits + 1))
    digits = "".join(str(d) for d in rng.integers(0, 10, size=count))
    parts, spans = [np.zeros(_samples(rng.uniform(*s.lead_ms)), np.float32)], []
    at = len(parts[0])
    for i, digit in enumerate(digits):
        if i:
            gap = np.zeros(_samples(rng.uniform(*s.gap_ms)), np.float32)
            parts.append(gap)
            at += len(gap)
        length = _samples(rng.uniform(*s.tone_ms))
        parts.append(dtmf_tone(digit, length, amplitude=rng.uniform(*s.amplitude),
                               phases=tuple(rng.uniform(0, 2 * np.pi, size=2))))
        spans.append((at, at + length))
        at += length
    waveform = np.concatenate(parts)
    noise = float(rng.uniform(*s.noise))
    waveform = (waveform + noise * rng.standard_normal(len(waveform))).astype(np.float32)
    return Clip(waveform=waveform, digits=digits, spans=tuple(spans), noise=noise)


class TonesCorpus:
    """index -> `Clip`: clip `index` of `split` ("train" or "validation")."""

    def __init__(self, split: str, *, seed: int, settings: ToneSettings = ToneSettings()):
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        self.split, self.seed, self.settings = split, seed, settings

    def __call__(self, index: int) -> Clip:
        return tone_clip(np.random.default_rng([self.seed, SPLIT_CODES[self.split], index]),
                         self.settings)


def pad_waveforms(waveforms, num_samples: int) -> np.ndarray:
    """float32 [n, num_samples]: each waveform followed by zeros (or cut to num_samples)."""
    out = np.zeros((len(waveforms), num_samples), np.float32)
    for row, wave in enumerate(waveforms):
        wave = np.asarray(wave, np.float32)[:num_samples]
        out[row, :len(wave)] = wave
    return out
