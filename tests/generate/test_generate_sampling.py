"""Sampling rules against independent numpy references and a statistical test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxformer.generate import sampling

from support.chi_square import power, ten_percent_biases


def random_logits(seed, batch=32, vocab=50):
    return jnp.asarray(np.random.default_rng(seed).normal(0, 2.0, (batch, vocab)), jnp.float32)


def numpy_nucleus(row: np.ndarray, p: float) -> set[int]:
    """The smallest set of most likely tokens whose probability reaches p (HF's definition)."""
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    kept, mass = [], 0.0
    for idx in order:
        kept.append(int(idx))
        mass += probs[idx]
        if mass >= p:
            break
    return set(kept)


def draw_many(logits, n_keys, **kw):
    keys = jax.random.split(jax.random.key(0), n_keys)
    draw = jax.jit(jax.vmap(lambda k: sampling.sample(logits, k, **kw)))
    return np.asarray(draw(keys))  # [n_keys, batch]


def test_temperature_zero_is_greedy_static_and_traced():
    logits = random_logits(1)
    expected = np.argmax(np.asarray(logits), axis=-1)
    got = sampling.sample(logits, jax.random.key(3), temperature=0.0, top_k=5, top_p=0.5)
    np.testing.assert_array_equal(np.asarray(got), expected)
    traced = jax.jit(lambda t: sampling.sample(logits, jax.random.key(3), temperature=t))(0.0)
    np.testing.assert_array_equal(np.asarray(traced), expected)
    # A traced positive temperature really samples (not all draws equal the argmax).
    draws = jax.jit(jax.vmap(lambda k: sampling.sample(logits, k, temperature=jnp.float32(1.0))))(
        jax.random.split(jax.random.key(0), 16))
    assert (np.asarray(draws) != expected).any()


def test_top_k_never_samples_outside_the_k_best():
    logits = random_logits(2)
    k = 5
    draws = draw_many(logits, 200, temperature=1.5, top_k=k)
    best = np.argsort(-np.asarray(logits), axis=-1)[:, :k]
    for row in range(logits.shape[0]):
        assert set(draws[:, row].tolist()) <= set(best[row].tolist())
    # ... and does sample more than one of them (the filter is not collapsing to greedy).
    assert len(set(draws[:, 0].tolist())) > 1


@pytest.mark.parametrize("p", [0.3, 0.8, 0.95])
def test_top_p_keeps_exactly_the_nucleus(p):
    logits = random_logits(3)
    filtered = np.asarray(sampling.top_p_filter(logits, p))
    draws = draw_many(logits, 200, top_p=p)
    for row in range(logits.shape[0]):
        nucleus = numpy_nucleus(np.asarray(logits[row], np.float64), p)
        assert set(np.flatnonzero(np.isfinite(filtered[row])).tolist()) == nucleus
        assert set(draws[:, row].tolist()) <= nucleus


def test_top_k_then_top_p_order_matches_hf():
    """HF applies top-p to the distribution left by top-k (renormalised over the k best)."""
    logits = random_logits(4)
    k, p = 10, 0.7
    filtered = np.asarray(sampling.filter_logits(logits, temperature=0.8, top_k=k, top_p=p))
    scaled = np.asarray(logits, np.float64) / 0.8
    for row in range(logits.shape[0]):
        best = np.argsort(-scaled[row])[:k]
        only_k = np.full_like(scaled[row], -np.inf)
        only_k[best] = scaled[row, best]
        assert set(np.flatnonzero(np.isfinite(filtered[row])).tolist()) == numpy_nucleus(only_k, p)


def chi_square_p_value(samples: np.ndarray, probs: np.ndarray) -> float:
    support = probs > 0
    assert np.isin(samples, np.flatnonzero(support)).all(), "sampled a token of probability 0"
    return chi_square(np.bincount(samples, minlength=probs.size)[support], probs[support])


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's goodness-of-fit p-value of `counts` under `probs` (df = categories - 1)."""
    expected = probs * counts.sum()
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return float(stats.chi2.sf(statistic, df=counts.size - 1))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.6, None, None),
                                                     (1.3, 3, None), (1.0, None, 0.8),
                                                     (0.8, 4, 0.7)])
def test_frequencies_match_the_softmax(temperature, top_k, top_p):
    """Chi-square goodness of fit of 1,000,000 draws against the filtered softmax. The seed is
    fixed, so the test is deterministic; a correct sampler lands below the 1e-3 level with
    probability 1e-3. Power: a sampler that gives any token of probability >= 1% 10% more or 10%
    less than its share is rejected with probability > 1 - 1e-4 (noncentral chi-square,
    tests/support/chi_square.py), and at this seed each such alternative is rejected; a sampler that
    ignored the temperature or the filter gives p-values below 1e-50 (checked below with the
    wrong distribution)."""
    toy = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)
    n = 1_000_000
    logits = jnp.broadcast_to(jnp.asarray(toy), (n, toy.size))  # one draw per row
    samples = np.asarray(sampling.sample(logits, jax.random.key(7), temperature=temperature,
                                         top_k=top_k, top_p=top_p))
    scaled = toy.astype(np.float64) / temperature
    keep = np.ones(toy.size, bool)
    if top_k is not None:
        keep &= scaled >= np.sort(scaled)[-top_k]
    if top_p is not None:
        keep &= np.isin(np.arange(toy.size), list(numpy_nucleus(np.where(keep, scaled, -np.inf), top_p)))
    probs = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
    probs /= probs.sum()
    assert chi_square_p_value(samples, probs) > 1e-3
    counts = np.bincount(samples, minlength=toy.size)[probs > 0]
    for _, _, biased in ten_percent_biases(probs[probs > 0], min_prob=0.01):
        assert power(probs[probs > 0], biased, n) > 1 - 1e-4
        assert chi_square(counts, biased) < 1e-3
    # The test has power: the untempered, unfiltered softmax is rejected when it differs.
    plain = np.exp(toy - toy.max()) / np.exp(toy - toy.max()).sum()
    if temperature != 1.0 or top_k or top_p:
        assert chi_square(np.bincount(samples, minlength=toy.size), plain) < 1e-50


def test_all_minus_inf_but_one_is_deterministic():
    logits = jnp.array([[0.0, 5.0, 1.0], [3.0, -1.0, 2.0]])
    got = sampling.sample(logits, jax.random.key(0), top_k=1)
    np.testing.assert_array_equal(np.asarray(got), [1, 0])


def test_keys_per_row_draw_each_row_on_its_own():
    logits = random_logits(7, batch=5)
    keys = jnp.stack([jax.random.key(s) for s in (4, 0, 9, 9, 2)])
    for kw in (dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.0, top_p=0.8)):
        together = sampling.sample(logits, keys, **kw)
        alone = [int(sampling.sample(logits[i:i + 1], keys[i:i + 1], **kw)[0]) for i in range(5)]
        assert together.tolist() == alone
