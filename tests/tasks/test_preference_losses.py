"""The preference losses (jaxformer.tasks.preference) against their formulas written out in numpy
and float64, at ordinary and extreme values; masks that leave prompt and padding out; the
gradients the formulas give; GAE against the backward loop of the PPO papers' code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.tasks.preference import (answer_logprobs, dpo_loss, gae, implicit_rewards,
                                        kl_rewards, ppo_policy_loss, ppo_value_loss, reward_loss)


def log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return -np.logaddexp(0.0, -x)  # log(1 / (1 + e^-x)), exact in float64


def dpo_reference(pc, pr, rc, rr, beta, eps, kind):
    h = (np.float64(pc) - pr) - (np.float64(rc) - rr)
    if kind == "sigmoid":
        return -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)
    if kind == "hinge":
        return np.maximum(0.0, 1 - beta * h)
    return (h - 1 / (2 * beta)) ** 2


LOGPS = [np.array(a, np.float32) for a in (
    [-12.0, -30.5, -7.25, -100.0, -3.0],   # policy, chosen
    [-14.0, -29.0, -9.5, -80.0, -3.0],     # policy, rejected
    [-13.0, -31.0, -7.0, -95.0, -4.0],     # reference, chosen
    [-13.5, -30.0, -8.0, -85.0, -2.5])]    # reference, rejected


# Label smoothing belongs to the sigmoid form.
DPO_CASES = [(kind, beta, 0.0) for kind in ("sigmoid", "ipo", "hinge") for beta in (0.1, 2.0)]
DPO_CASES += [("sigmoid", 0.5, 0.2)]


@pytest.mark.parametrize("kind,beta,eps", DPO_CASES)
def test_dpo_losses_equal_the_formulas(kind, beta, eps):
    got = dpo_loss(*map(jnp.asarray, LOGPS), beta=beta, label_smoothing=eps, kind=kind)
    np.testing.assert_allclose(got, dpo_reference(*LOGPS, beta, eps, kind), rtol=1e-6, atol=1e-6)


def test_dpo_is_finite_at_extreme_log_ratios():
    """A log-ratio of -200 costs about 200 beta (log sigmoid(-x) = -x for large x), not inf."""
    zero = jnp.zeros(2)
    for beta in (0.1, 1.0):
        worst = dpo_loss(jnp.array([-200.0, 0.0]), zero, jnp.array([0.0, 200.0]), zero, beta=beta)
        np.testing.assert_allclose(worst, [200 * beta] * 2, rtol=1e-6)
        best = dpo_loss(jnp.array([200.0]), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), beta=beta)
        assert 0.0 <= float(best[0]) < 1e-6
        grad = jax.grad(lambda p: dpo_loss(p, zero, zero, zero, beta=beta).sum())(jnp.full(2, -200.0))
        np.testing.assert_allclose(grad, [-beta] * 2, rtol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_dpo_gradient_where_the_policy_equals_the_reference(eps):
    """At h = 0 the sigmoid loss's derivative in the chosen log-probability is
    -beta ((1 - eps) sigmoid(0) - eps sigmoid(0)) = -beta (1 - 2 eps) / 2, and the opposite in the
    rejected one: the first step raises chosen and lowers rejected answers equally."""
    beta = 0.3
    same = jnp.array([-5.0, -17.0])
    grads = jax.grad(lambda c, r: dpo_loss(c, r, same, same, beta=beta, label_smoothing=eps).sum(),
                     (0, 1))(same, same)
    np.testing.assert_allclose(grads[0], [-beta * (1 - 2 * eps) / 2] * 2, rtol=1e-6)
    np.testing.assert_allclose(grads[1], [beta * (1 - 2 * eps) / 2] * 2, rtol=1e-6)
    rewards = implicit_rewards(jnp.array([-4.0]), jnp.array([-5.0]), beta=beta)
    np.testing.assert_allclose(rewards, [beta * 1.0], rtol=1e-6)


def test_dpo_refuses_bad_settings():
    x = jnp.zeros(1)
    with pytest.raises(ValueError, match="use one of"):
        dpo_loss(x, x, x, x, beta=0.1, kind="kto")
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, beta=0.1, label_smoothing=0.5)


def test_reward_loss_is_bradley_terry():
    chosen, rejected = np.array([1.5, -0.5, 3.0, -1000.0], np.float32), np.array([0.5, 0.5, -2.0, 0.0], np.float32)
    margin = np.array([0.0, 1.0, 2.0, 0.0], np.float32)
    np.testing.assert_allclose(reward_loss(jnp.asarray(chosen), jnp.asarray(rejected)),
                               -log_sigmoid(np.float64(chosen) - rejected), rtol=1e-6)
    got = reward_loss(jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(margin))
    np.testing.assert_allclose(got, -log_sigmoid(np.float64(chosen) - rejected - margin), rtol=1e-6)
    assert np.isfinite(np.asarray(got)).all() and float(got[3]) == pytest.approx(1000.0)


def test_answer_logprobs_leave_prompt_and_padding_out():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 6))
    mask = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], np.float32)
    got = answer_logprobs(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    want = []
    for b in range(2):
        total = 0.0
        for t in range(6):
            if mask[b, t]:
                z = np.float64(logits[b, t])
                total += z[targets[b, t]] - (z.max() + math.log(np.exp(z - z.max()).sum()))
        want.append(total)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Whatever the prompt and padding positions hold, the answer's log-probability is the same.
    logits2, targets2 = logits.copy(), targets.copy()
    logits2[mask == 0] = rng.normal(size=logits2[mask == 0].shape) * 10
    targets2[mask == 0] = 0
    np.testing.assert_array_equal(
        answer_logprobs(jnp.asarray(logits2), jnp.asarray(targets2), jnp.asarray(mask)), got)


def gae_loop(rewards, values, gamma, lam):
    """The backward loop of the PPO reference code, on one answer (no mask): the value after the
    last token is 0."""
    T = len(rewards)
    advantages, last = np.zeros(T), 0.0
    for t in reversed(range(T)):
        next_value = values[t + 1] if t + 1 < T else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages, advantages + np.asarray(values)


def test_gae_hand_example():
    """Two tokens, gamma 0.5, lam 0.5, rewards [0, 1], values [0.2, 0.4]:
    delta_1 = 1 - 0.4 = 0.6, A_1 = 0.6; delta_0 = 0 + 0.5 * 0.4 - 0.2 = 0, A_0 = 0 + 0.25 * 0.6."""
    adv, ret = gae(jnp.array([[0.0, 1.0]]), jnp.array([[0.2, 0.4]]), jnp.ones((1, 2)),
                   gamma=0.5, lam=0.5)
    np.testing.assert_allclose(adv, [[0.15, 0.6]], rtol=1e-6)
    np.testing.assert_allclose(ret, [[0.35, 1.0]], rtol=1e-6)


def test_gae_with_prompt_and_padding_equals_the_answer_alone():
    rng = np.random.default_rng(1)
    rewards, values = rng.normal(size=(2, 9)), rng.normal(size=(2, 9))
    mask = np.zeros((2, 9))
    mask[0, 3:7], mask[1, 1:9] = 1, 1
    adv, ret = gae(jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32),
                   jnp.asarray(mask), gamma=0.99, lam=0.95)
    for b, (start, end) in enumerate([(3, 7), (1, 9)]):
        want_adv, want_ret = gae_loop(rewards[b, start:end], values[b, start:end], 0.99, 0.95)
        np.testing.assert_allclose(np.asarray(adv)[b, start:end], want_adv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ret)[b, start:end], want_ret, rtol=1e-5, atol=1e-6)
    assert not np.asarray(adv)[mask == 0].any() and not np.asarray(ret)[mask == 0].any()


def test_kl_rewards_zero_kl_when_policy_is_reference_and_score_on_the_last_token():
    logp = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5)), jnp.float32)
    mask = jnp.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    rewards, kl = kl_rewards(logp, logp, jnp.array([2.0, -1.0]), mask, kl_coef=0.1)
    assert not np.asarray(kl).any()
    np.testing.assert_array_equal(rewards, [[0, 0, 0, 2.0, 0], [0, 0, 0, 0, -1.0]])
    ref = logp - 0.5
    rewards, kl = kl_rewards(logp, ref, jnp.zeros(2), mask, kl_coef=0.1)
    np.testing.assert_allclose(kl, 0.5 * np.asarray(mask), rtol=1e-6)
    np.testing.assert_allclose(rewards, -0.05 * np.asarray(mask), rtol=1e-6)


def test_clipped_policy_gradient_is_zero_outside_the_clip_range():
    """Per token: A > 0 with ratio above 1 + clip, and A < 0 with ratio below 1 - clip, give no
    gradient; inside the range the gradient is -A ratio / n (n answer tokens)."""
    old = jnp.zeros(4)
    logp = jnp.log(jnp.array([1.5, 0.5, 1.1, 0.9]))  # ratios
    adv = jnp.array([1.0, -1.0, 2.0, -3.0])
    mask = jnp.ones(4)
    grad = jax.grad(lambda lp: ppo_policy_loss(lp[None], old[None], adv[None], mask[None],
                                               clip=0.2))(logp)
    np.testing.assert_allclose(grad, [0.0, 0.0, -2.0 * 1.1 / 4, 3.0 * 0.9 / 4], rtol=1e-6)
    # Value loss: the larger of the clipped and unclipped errors, halved.
    v, old_v, ret = jnp.array([[1.0, 0.0]]), jnp.array([[0.5, 0.1]]), jnp.array([[0.0, 0.05]])
    want = 0.5 * np.mean([max(1.0 ** 2, (0.7 - 0.0) ** 2), max(0.05 ** 2, (0.0 - 0.05) ** 2)])
    np.testing.assert_allclose(ppo_value_loss(v, old_v, ret, jnp.ones((1, 2))), want, rtol=1e-6)
