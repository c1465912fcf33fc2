"""T5's span corruption (Raffel et al. 2020, 3.1.4) as a grain transform.

About `noise_density` (15%) of a piece of text's tokens are dropped in spans of mean length
`mean_noise_span_length` (3); the input keeps the rest with one sentinel in place of each span,
the target lists each sentinel followed by the tokens it replaced:

    tokens  Thank you for inviting me to your party last week .
    inputs  Thank you <X> me to your party <Y> week . </s>
    targets <X> for inviting <Y> last <Z> </s>

Sentinels count down from the top of the vocabulary (the first span gets `first_sentinel_id`,
T5's <extra_id_0> = 32099, the next one less), and both sides end with `eos_id`. The span layout
follows T5's `random_spans_noise_mask`: the noise and non-noise tokens are each split into the
same number of non-empty, uniformly random segments, interleaved starting with non-noise.
`span_corruption_lengths` gives the raw piece length whose corrupted input is exactly the
model's input length (T5's `random_spans_helper`: 568 raw tokens for 512 inputs, 114 targets).
"""

import grain
import numpy as np


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float):
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    return num_noise, num_spans


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of `num_segments` non-empty segments that partition `num_items`, uniformly."""
    first = np.zeros(num_items, bool)
    first[1 + rng.choice(num_items - 1, num_segments - 1, replace=False)] = True
    segment = np.cumsum(first)
    return np.bincount(segment, minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """[length] bool, True for tokens to drop, in spans."""
    if length < 2:
        return np.zeros(length, bool)
    num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    keep_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    spans = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)  # keep, noise, keep, ...
    return np.repeat(np.arange(len(spans)) % 2 == 1, spans)


def replace_spans(tokens: np.ndarray, mask: np.ndarray, first_sentinel_id: int) -> np.ndarray:
    """Each run of `mask` in `tokens` becomes one sentinel (descending from first_sentinel_id)."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    sentinels = first_sentinel_id + 1 - np.cumsum(starts)
    out = np.where(starts, sentinels, tokens)
    return out[~(mask & ~starts)].astype(np.int32)


def corrupt(tokens: np.ndarray, rng: np.random.Generator, *, noise_density: float = 0.15,
            mean_noise_span_length: float = 3.0, first_sentinel_id: int, eos_id: int
            ) -> dict[str, np.ndarray]:
    """{"inputs", "targets"} for one piece of text (int32 token ids)."""
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
    eos = np.asarray([eos_id], np.int32)
    return {"inputs": np.concatenate([replace_spans(tokens, mask, first_sentinel_id), eos]),
            "targets": np.concatenate([replace_spans(tokens, ~mask, first_sentinel_id), eos])}


def span_corruption_lengths(inputs_length: int, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(raw tokens per piece, targets length) so that a corrupted piece's inputs (sentinels and
    eos included) fill `inputs_length` exactly."""
    def lengths(tokens: int) -> tuple[int, int]:
        num_noise = int(round(tokens * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return tokens - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens = inputs_length - 1
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    return tokens, lengths(tokens)[1]


class SpanCorruption(grain.transforms.RandomMap):
    """grain transform: {"tokens": int32 [n]} -> {"inputs", "targets"} (see the module doc)."""

    def __init__(self, *, first_sentinel_id: int, eos_id: int, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0):
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
        if mean_noise_span_length < 1.0:
            raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
        self.first_sentinel_id, self.eos_id = first_sentinel_id, eos_id
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        return corrupt(np.asarray(element["tokens"], np.int32), rng,
                       noise_density=self.noise_density,
                       mean_noise_span_length=self.mean_noise_span_length,
                       first_sentinel_id=self.first_sentinel_id, eos_id=self.eos_id)
