"""Multi-digit addition, generated in process: "352+79" -> "431".

Operands have 1 to `max_digits` digits (the count drawn uniformly, then the number), as in Flax's
Linen seq2seq example. A fixed share of all problems is held out: problem (a, b) belongs to the
held-out split when a hash of (a, b) falls below `holdout_fraction`, so training never sees a
held-out problem (in either operand order, as (b, a) is held out with (a, b)) and exact match on
them measures generalisation rather than memory.

Example i of a split is drawn from a generator seeded by (seed, split, i): deterministic, so a
grain iterator over indices resumes exactly.
"""

import numpy as np

from jaxformer.data.tokenizers.char import CharTokenizer

ALPHABET = "+0123456789"  # sorted by code point, as CharTokenizer requires; eos comes last
SPLIT_CODES = {"train": 0, "heldout": 1}


def addition_tokenizer() -> CharTokenizer:
    """Characters "+0123456789" (ids 0-10) and an end token (id 11)."""
    return CharTokenizer(ALPHABET, eos=True)


def is_heldout(a: int, b: int, holdout_fraction: float) -> bool:
    """Whether problem a + b (or b + a) is in the held-out split: a fixed hash of the unordered
    pair, uniform in [0, 1)."""
    lo, hi = min(a, b), max(a, b)
    mixed = np.random.default_rng([lo, hi, 0x5EED]).random()
    return bool(mixed < holdout_fraction)


def addition_problem(split: str, index: int, *, seed: int, max_digits: int,
                     holdout_fraction: float) -> tuple[int, int]:
    """Problem `index` of `split` ("train" or "heldout"): operands drawn until the pair is in the
    split."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    want_heldout = split == "heldout"
    while True:
        a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, max_digits + 1)))) for _ in range(2))
        if is_heldout(a, b, holdout_fraction) == want_heldout:
            return a, b


class AdditionExamples:
    """index -> {"inputs": ids of "a+b", "targets": ids of the sum followed by the end token}."""

    def __init__(self, split: str, *, seed: int, max_digits: int, holdout_fraction: float):
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        self.split, self.seed = split, seed
        self.max_digits, self.holdout_fraction = max_digits, holdout_fraction
        self.tokenizer = addition_tokenizer()

    def problem(self, index: int) -> tuple[int, int]:
        return addition_problem(self.split, index, seed=self.seed, max_digits=self.max_digits,
                                holdout_fraction=self.holdout_fraction)

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        a, b = self.problem(index)
        eos = np.asarray([self.tokenizer.eos_id], np.int32)
        return {"inputs": self.tokenizer.encode_array(f"{a}+{b}"),
                "targets": np.concatenate([self.tokenizer.encode_array(str(a + b)), eos])}


def addition_lengths(max_digits: int) -> tuple[int, int]:
    """The longest source ("9..9+9..9") and target (the sum and the end token) in tokens."""
    return 2 * max_digits + 1, max_digits + 2
