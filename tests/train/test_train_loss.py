"""The masked cross-entropy against a numpy reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.tasks.losses import masked_cross_entropy, masked_loss_sum


def numpy_masked_ce(logits, targets, mask):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return ((log_z - picked) * mask).sum() / mask.sum()


def test_matches_numpy_and_ignores_masked_tokens():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 4
    targets = rng.integers(0, 11, (3, 7)).astype(np.int32)
    mask = (rng.random((3, 7)) > 0.4).astype(np.float32)
    expected = numpy_masked_ce(logits, targets, mask)
    assert float(masked_cross_entropy(jnp.asarray(logits), targets, mask)) == pytest.approx(expected, rel=1e-5)

    scrambled = logits.copy()
    scrambled[mask == 0] = 1e4  # what the model says at masked positions must not matter
    assert float(masked_cross_entropy(jnp.asarray(scrambled), targets, mask)) == pytest.approx(expected, rel=1e-5)

    total, count = masked_loss_sum(jnp.asarray(logits), targets, mask)
    assert float(count) == mask.sum() and float(total) / float(count) == pytest.approx(expected, rel=1e-5)


def test_bfloat16_logits_are_scored_in_float32():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 300)).astype(np.float32)
    targets = rng.integers(0, 300, (2, 5)).astype(np.int32)
    mask = np.ones((2, 5), np.float32)
    low = jnp.asarray(logits).astype(jnp.bfloat16)
    loss = masked_cross_entropy(low, targets, mask)
    assert loss.dtype == jnp.float32
    expected = numpy_masked_ce(np.asarray(low.astype(jnp.float32)), targets, mask)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_fully_masked_batch_is_zero_not_nan():
    logits = jnp.zeros((1, 4, 5))
    assert float(masked_cross_entropy(logits, jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4)))) == 0.0
