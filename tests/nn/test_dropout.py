"""Dropout against its definition (Srivastava et al. 2014, in the "inverted" form every framework
uses): each unit is kept independently with probability 1 - rate and a kept unit is scaled by
1 / (1 - rate), so the expected output equals the input; rate 0 or no key is the identity.

Statistical power (all draws come from fixed keys, so every test is deterministic):
- Kept fraction: N = 2**21 units per rate. Its standard deviation is sqrt(q (1 - q) / N) <= 3.2e-4
  for keep probability q. The test accepts |fraction - q| <= 0.45% of q (at least 9.9 standard
  deviations at the rates used, so a correct dropout fails with probability < 1e-22), and a keep
  probability off by 1% of q lands at least 0.55% of q (>= 12 standard deviations) outside that
  bound: a 1% error passes with probability < 1e-32.
- Mean: the output mean over N units of ones is K / (N q) for K kept; its standard deviation is
  sqrt((1 - q) / (q N)) <= 4.6e-4, the bound 0.5% is 11 of them; without the 1/q rescaling the
  mean is q, at least 10% off.
- Per-unit expectation: 4,096 keys over 256 units; each unit's mean output has standard deviation
  |x| sqrt((1 - q) / (4096 q)) <= 0.0103 |x| at rate 0.3; the bound is 6.5% of |x|.

Mutations tried on jaxformer/nn/dropout.py (then reverted): keeping units with probability `rate`
instead of `1 - rate` fails the kept-fraction, mean and attention tests (the rates are not 0.5,
where that mistake is invisible); dropping the 1/(1 - rate) rescaling fails the kept-values,
mean and per-unit tests; a keep probability 1% too high or too low fails the kept-fraction test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.nn.attention_ops import einsum_attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.dropout import dropout
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.norms import LayerNorm

RATES = (0.1, 0.2, 0.3)
N = 2**21


def draw(x, rate, seed):
    return np.asarray(jax.jit(dropout, static_argnums=1)(x, rate, jax.random.key(seed)))


@pytest.mark.parametrize("rate", RATES)
def test_kept_fraction_is_one_minus_rate(rate):
    out = draw(jnp.ones(N), rate, seed=1)
    keep = 1.0 - rate
    fraction = np.count_nonzero(out) / N
    sigma = np.sqrt(keep * rate / N)
    bound = 0.0045 * keep
    assert bound >= 9.9 * sigma and 0.0055 * keep >= 12 * sigma  # the power stated above
    assert abs(fraction - keep) <= bound, (fraction, keep)


@pytest.mark.parametrize("rate", RATES)
def test_kept_values_are_scaled_and_dropped_ones_are_zero(rate):
    x = jax.random.normal(jax.random.key(2), (64, 1024)) + 3.0  # no unit is exactly 0
    out = draw(x, rate, seed=3)
    kept = out != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(out[kept], np.asarray(x)[kept] / (1.0 - rate), rtol=1e-6)
    assert (out[~kept] == 0).all()


@pytest.mark.parametrize("rate", RATES)
def test_mean_is_preserved(rate):
    keep = 1.0 - rate
    out = draw(jnp.ones(N), rate, seed=4)
    assert 0.005 >= 11 * np.sqrt(rate / (keep * N))
    assert abs(out.mean() - 1.0) <= 0.005, out.mean()


def test_each_unit_keeps_its_expectation():
    """E[dropout(x)_i] = x_i for every unit, not just on average over units."""
    rate, draws = 0.3, 4096
    x = jax.random.normal(jax.random.key(5), (256,))
    keys = jax.random.split(jax.random.key(6), draws)
    outs = np.asarray(jax.jit(jax.vmap(lambda k: dropout(x, rate, k)))(keys))  # [draws, 256]
    x = np.asarray(x)
    sigma = np.abs(x) * np.sqrt(rate / ((1 - rate) * draws))
    assert (0.065 * np.abs(x) >= 6 * sigma).all()
    np.testing.assert_array_less(np.abs(outs.mean(0) - x), 0.065 * np.abs(x) + 1e-12)
    # The units are dropped independently: two units' keep indicators are uncorrelated.
    kept = outs != 0
    correlation = np.corrcoef(kept[:, 0], kept[:, 1])[0, 1]
    assert abs(correlation) < 6 / np.sqrt(draws)


def test_rate_zero_and_no_key_are_the_identity():
    x = jax.random.normal(jax.random.key(7), (8, 16)).astype(jnp.bfloat16)
    assert dropout(x, 0.0, jax.random.key(8)) is x
    assert dropout(x, 0.5, None) is x
    out = dropout(x, 0.25, jax.random.key(8))
    assert out.dtype == jnp.bfloat16  # dropout keeps the activation dtype
    # The same key gives the same mask; another key another one.
    np.testing.assert_array_equal(out, dropout(x, 0.25, jax.random.key(8)))
    assert not np.array_equal(out, dropout(x, 0.25, jax.random.key(9)))


# --- dropout on the attention probabilities, as HF's BERT applies it -----------------------------

def attention_inputs(q_time=32, k_time=32, head_dim=32):
    """q, k random; v the identity, so the output rows are the (dropped) attention weights."""
    q = jax.random.normal(jax.random.key(10), (2, q_time, 4, head_dim))
    k = jax.random.normal(jax.random.key(11), (2, k_time, 4, head_dim))
    v = jnp.broadcast_to(jnp.eye(k_time, head_dim)[None, :, None, :], (2, k_time, 4, head_dim))
    return q, k, v


def naive_weights(q, k, scale):
    """softmax(q k^T * scale) in float64, [batch, heads, q_time, k_time]."""
    scores = np.einsum("bthd,bshd->bhts", np.asarray(q, np.float64), np.asarray(k, np.float64)) * scale
    scores -= scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(-1, keepdims=True)


def test_attention_dropout_drops_probabilities_and_rescales_the_kept_ones():
    """HF's BertSelfAttention: probs = dropout(softmax(scores)); out = probs @ v. With v the
    identity the output is the dropped probabilities themselves, each either 0 or p / (1 - rate)."""
    rate, scale = 0.2, 0.125
    q, k, v = attention_inputs()
    reference = naive_weights(q, k, scale)
    out, weights = einsum_attention(q, k, v, scale=scale, dropout_rate=rate,
                                    dropout_rng=jax.random.key(12))
    probs = np.asarray(out).transpose(0, 2, 1, 3)  # [batch, heads, q_time, k_time]
    kept = probs != 0
    np.testing.assert_allclose(probs[kept], reference[kept] / (1 - rate), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(weights), probs, rtol=1e-6)  # HF returns them dropped
    # 8,192 probabilities: the kept fraction's standard deviation is 0.0044; 0.8 +- 0.03 is 6.8 of
    # them, and a keep probability of `rate` (0.2) is 136 away.
    assert abs(kept.mean() - (1 - rate)) < 0.03, kept.mean()

    # Without a key, or at rate 0, the plain softmax.
    for kwargs in ({}, {"dropout_rate": rate}, {"dropout_rate": 0.0, "dropout_rng": jax.random.key(12)}):
        out, _ = einsum_attention(q, k, v, scale=scale, **kwargs)
        np.testing.assert_allclose(np.asarray(out).transpose(0, 2, 1, 3), reference, rtol=1e-5, atol=1e-7)


# --- where a block applies it ---------------------------------------------------------------------

def test_block_drops_the_sublayer_output_before_the_residual_sum():
    """Vaswani et al. 2017, 5.4: dropout on each sublayer's output before it is added to the
    residual, x + dropout(f(norm(x))): where a unit is dropped the input passes unchanged, where it
    is kept the sublayer's output is added scaled by 1 / (1 - rate); the residual is never dropped."""
    rate, d = 0.3, 16
    rngs = nnx.Rngs(0)
    feed_forward = FeedForward(d, 4 * d, activation="gelu", init=nnx.initializers.normal(0.3),
                               rngs=rngs)
    norm = LayerNorm(d, rngs=rngs)
    block = TransformerBlock({"feed_forward": (feed_forward, norm)}, dropout_rate=rate)
    x = jax.random.normal(jax.random.key(13), (2, 8, d)) + 1.0
    sublayer = np.asarray(feed_forward(norm(x)), np.float64)
    ctx = BlockContext(positions=jnp.broadcast_to(jnp.arange(8), (2, 8)),
                       dropout_rng=jax.random.key(14))
    delta = np.asarray(block(x, ctx)[0], np.float64) - np.asarray(x, np.float64)
    dropped = delta == 0
    np.testing.assert_allclose(delta[~dropped], sublayer[~dropped] / (1 - rate), rtol=1e-5,
                               atol=1e-6)
    # 256 units: the dropped fraction's standard deviation is 0.029; 0.3 +- 0.12 is 4 of them.
    assert abs(dropped.mean() - rate) < 0.12, dropped.mean()
