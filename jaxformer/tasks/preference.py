"""Losses for learning from preferences, as pure functions of arrays: the reward model's
Bradley-Terry loss, DPO and its IPO and hinge variants, and PPO's pieces (per-token KL rewards,
generalised advantage estimation, the clipped policy and value losses).

Conventions. A "log-probability of an answer" is the sum over the answer's tokens of
log p(token | everything before it) (`answer_logprobs`), prompt and padding left out by a mask.
Per-token arrays are [batch, time] with `mask` 1 on the answer's tokens; a position with mask 0
contributes nothing to any loss or advantage.

Formulas (the papers' notation, beta the inverse temperature of the implicit reward):
- reward model (Ouyang et al. 2022): -log sigmoid(r_chosen - r_rejected - margin);
- DPO (Rafailov et al. 2023), with h = (pi_c - pi_r) - (ref_c - ref_r):
  sigmoid: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h) (eps: label smoothing,
  the conservative DPO of Mitchell 2023); hinge (SLiC): max(0, 1 - beta h); IPO (Azar et al.
  2023, their eq. 17 with tau = beta): (h - 1 / (2 beta))^2, which the paper states on
  log-probabilities averaged over the answer's tokens (pass those for IPO);
- implicit rewards: beta (pi - ref) for each answer;
- PPO (Schulman et al. 2017) with rewards -kl_coef (logp - ref_logp) per token plus the
  sequence's score at its last token (Ziegler et al. 2019), advantages by GAE (Schulman et al.
  2016), clipped surrogate and clipped value losses.
"""

import jax
import jax.numpy as jnp

DPO_KINDS = ("sigmoid", "ipo", "hinge")


def answer_logprobs(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum over the masked tokens of log softmax(logits)[target]: logits [B, T, V] (the
    prediction of each target), targets and mask [B, T] -> [B] float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.sum(picked * mask.astype(jnp.float32), axis=-1)


def reward_loss(r_chosen: jax.Array, r_rejected: jax.Array, margin: jax.Array | None = None
                ) -> jax.Array:
    """Bradley-Terry loss of a reward model: -log sigmoid(r_chosen - r_rejected - margin) per pair,
    [B] -> [B]. Written with log_sigmoid, so a difference of -1000 gives 1000, not inf."""
    difference = r_chosen.astype(jnp.float32) - r_rejected.astype(jnp.float32)
    if margin is not None:
        difference = difference - margin
    return -jax.nn.log_sigmoid(difference)


def dpo_loss(policy_chosen: jax.Array, policy_rejected: jax.Array, reference_chosen: jax.Array,
             reference_rejected: jax.Array, *, beta: float, label_smoothing: float = 0.0,
             kind: str = "sigmoid") -> jax.Array:
    """Per-pair DPO losses [B] from the answers' log-probabilities [B] under the policy and the
    frozen reference (see the module docstring for each `kind`)."""
    if kind not in DPO_KINDS:
        raise ValueError(f"dpo kind {kind!r} is unknown: use one of {DPO_KINDS}")
    if beta <= 0:
        raise ValueError(f"dpo beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo label_smoothing must be in [0, 0.5), got {label_smoothing}")
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    h = (f32(policy_chosen) - f32(policy_rejected)) - (f32(reference_chosen) - f32(reference_rejected))
    if kind == "sigmoid":
        return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
                - label_smoothing * jax.nn.log_sigmoid(-beta * h))
    if kind == "hinge":
        return jax.nn.relu(1.0 - beta * h)
    return (h - 1.0 / (2.0 * beta)) ** 2


def implicit_rewards(policy: jax.Array, reference: jax.Array, *, beta: float) -> jax.Array:
    """DPO's implicit reward of each answer, beta (log pi - log ref), with no gradient."""
    return jax.lax.stop_gradient(beta * (policy.astype(jnp.float32) - reference.astype(jnp.float32)))


def kl_rewards(logprobs: jax.Array, reference_logprobs: jax.Array, scores: jax.Array,
               mask: jax.Array, *, kl_coef: float) -> tuple[jax.Array, jax.Array]:
    """PPO's per-token rewards [B, T]: -kl_coef (logp - ref_logp) on every answer token, plus the
    reward model's score [B] on each row's last answer token. Returns (rewards, per-token KL
    estimate logp - ref_logp), both zero where mask is 0."""
    m = mask.astype(jnp.float32)
    kl = (logprobs.astype(jnp.float32) - reference_logprobs.astype(jnp.float32)) * m
    time = jnp.arange(mask.shape[1])
    last = jnp.max(jnp.where(mask > 0, time, -1), axis=1)  # -1: a row without answer tokens
    at_last = (time[None, :] == last[:, None]).astype(jnp.float32)
    return -kl_coef * kl + scores.astype(jnp.float32)[:, None] * at_last, kl


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, *, gamma: float, lam: float
        ) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over [B, T]: delta_t = r_t + gamma V_{t+1} - V_t and
    A_t = delta_t + gamma lam A_{t+1}, with the value and advantage past the last answer token
    taken as 0 (the episode ends there). Returns (advantages, returns = advantages + values),
    zero where mask is 0."""
    m = mask.astype(jnp.float32)
    r, v = rewards.astype(jnp.float32) * m, values.astype(jnp.float32) * m
    next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
    deltas = (r + gamma * next_v - v) * m

    def back(carry, step):
        delta, keep = step
        advantage = (delta + gamma * lam * carry) * keep
        return advantage, advantage

    _, advantages = jax.lax.scan(back, jnp.zeros(r.shape[0]), (deltas.T, m.T), reverse=True)
    advantages = advantages.T
    return advantages, (advantages + v) * m


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    m = mask.astype(jnp.float32)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def ppo_policy_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array,
                    mask: jax.Array, *, clip: float = 0.2) -> jax.Array:
    """The clipped surrogate, negated: mean over answer tokens of
    max(-A ratio, -A clip(ratio, 1 - clip, 1 + clip)), ratio = exp(logp - old_logp). Where the
    clipped term is the larger, the gradient is zero."""
    ratio = jnp.exp(logprobs.astype(jnp.float32) - jax.lax.stop_gradient(old_logprobs.astype(jnp.float32)))
    a = jax.lax.stop_gradient(advantages.astype(jnp.float32))
    losses = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1.0 - clip, 1.0 + clip))
    return masked_mean(losses, mask)


def ppo_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array,
                   *, clip: float = 0.2) -> jax.Array:
    """Half the mean over answer tokens of max((V - R)^2, (V_clipped - R)^2), V_clipped = old V
    moved by at most `clip` (PPO2's value clipping)."""
    values = values.astype(jnp.float32)
    old = jax.lax.stop_gradient(old_values.astype(jnp.float32))
    target = jax.lax.stop_gradient(returns.astype(jnp.float32))
    clipped = old + jnp.clip(values - old, -clip, clip)
    return 0.5 * masked_mean(jnp.maximum((values - target) ** 2, (clipped - target) ** 2), mask)
