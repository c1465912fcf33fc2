"""Masked-LM inputs (BERT, Devlin et al. 2018, 3.1) as a grain transform.

Of the tokens that are not special ([CLS], [SEP], padding), `mask_prob` (15%) are chosen for
prediction, at most `max_predictions` per sequence. A chosen token becomes `[MASK]` with
probability 0.8, a random token with 0.1 (drawn from the non-special ids) and stays itself with
0.1; the model must predict the original at every chosen position.

How many: Google's BERT takes round(0.15 * n). Here the count is 0.15 * n rounded down or up at
random with the probability of its fraction, so the expected share is exactly 15% for every
length (rounding alone moves short sequences' share by up to 1/(2n)).

The example gains `masked_positions` (indices of the chosen tokens, sorted; zeros after the
last), `masked_ids` (their original ids) and `masked_weights` (1.0 for a real prediction, 0.0
for padding), each [max_predictions]: the layout of Google's pretraining data, which lets the
model compute the vocabulary projection at these positions only.
"""

import numpy as np


class MaskTokens:
    """A grain `random_map` transform: example dict (with `tokens`, `special_mask`) -> the same
    with masked `tokens` and the three `masked_*` arrays (see the module docstring)."""

    def __init__(self, *, vocab_size: int, mask_id: int, special_ids, mask_prob: float = 0.15,
                 max_predictions: int = 20, mask_token_prob: float = 0.8,
                 random_token_prob: float = 0.1):
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must lie in (0, 1), got {mask_prob}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1:
            raise ValueError("mask_token_prob and random_token_prob must be non-negative and sum "
                             "to at most 1")
        self.mask_id, self.mask_prob, self.max_predictions = mask_id, mask_prob, max_predictions
        self.mask_token_prob, self.random_token_prob = mask_token_prob, random_token_prob
        self.random_ids = np.setdiff1d(np.arange(vocab_size), np.asarray(sorted(special_ids)))

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        tokens = example["tokens"].copy()
        candidates = np.flatnonzero(~example["special_mask"])
        expected = self.mask_prob * len(candidates)
        count = int(expected) + int(rng.random() < expected - int(expected))
        count = min(count, self.max_predictions, len(candidates))
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        positions = np.zeros(self.max_predictions, np.int32)
        ids = np.zeros(self.max_predictions, np.int32)
        weights = np.zeros(self.max_predictions, np.float32)
        positions[:count], ids[:count], weights[:count] = chosen, tokens[chosen], 1.0
        draw = rng.random(count)
        use_mask = draw < self.mask_token_prob
        use_random = (draw >= self.mask_token_prob) & (draw < self.mask_token_prob
                                                        + self.random_token_prob)
        tokens[chosen[use_mask]] = self.mask_id
        tokens[chosen[use_random]] = rng.choice(self.random_ids, size=int(use_random.sum()))
        return {**example, "tokens": tokens, "masked_positions": positions, "masked_ids": ids,
                "masked_weights": weights}
