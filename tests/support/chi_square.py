"""Pearson's chi-square goodness of fit, and its power, for the tests that check frequencies.

A frequency test draws from a fixed seed, so it is deterministic; what makes it meaningful is that
it would reject a wrong distribution. `power` gives the probability (over seeds) that the test
rejects `alternative` when the sampler really follows it: the statistic is then approximately
noncentral chi-square with noncentrality n * sum((alternative - probs)**2 / probs) (Cochran
1952). `ten_percent_biases` lists the wrong distributions the tests must reject.
"""

import numpy as np
from scipy import stats

ALPHA = 1e-3  # a correct sampler fails with this probability (over seeds)


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's goodness-of-fit p-value of `counts` under `probs` (df = categories - 1)."""
    counts, probs = np.asarray(counts, np.float64), np.asarray(probs, np.float64)
    expected = probs * counts.sum()
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return float(stats.chi2.sf(statistic, df=counts.size - 1))


def power(probs: np.ndarray, alternative: np.ndarray, n: int, alpha: float = ALPHA) -> float:
    """P(chi_square(counts, probs) < alpha) for n draws from `alternative`."""
    probs, alternative = np.asarray(probs, np.float64), np.asarray(alternative, np.float64)
    df = probs.size - 1
    noncentrality = n * float(np.sum((alternative - probs) ** 2 / probs))
    return float(stats.ncx2.sf(stats.chi2.isf(alpha, df), df, noncentrality))


def ten_percent_biases(probs: np.ndarray, min_prob: float = 0.0):
    """Each category with probability >= min_prob made 10% more and 10% less likely, the others
    rescaled to keep the total 1: [(category, factor, alternative probs), ...]."""
    probs = np.asarray(probs, np.float64)
    out = []
    for i in np.flatnonzero((probs >= min_prob) & (probs < 1)):  # one sure category: no alternative
        for factor in (0.9, 1.1):
            alternative = probs * (1 - probs[i] * factor) / (1 - probs[i])
            alternative[i] = probs[i] * factor
            out.append((int(i), factor, alternative))
    return out
