"""The `reward` and `dpo` tasks' losses as the train step calls them (`task.loss(output, batch)`):
prompt and padding count for nothing, DPO with the policy equal to its reference gives log 2 and
the gradient the formula gives, and the reward head reads each row's last real token."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.data import CharTokenizer
from jaxformer.data.preference import encode_pairs
from jaxformer.models import build_model
from jaxformer.models.decoder import DecoderConfig
from jaxformer.models.output import ModelOutput
from jaxformer.tasks.dpo import DPO, DPOConfig
from jaxformer.tasks.reward import Reward, RewardConfig

SEQ = 12
TOKENIZER = CharTokenizer(" abcdefgh")
PAIRS = [{"prompt": "abc", "chosen": "hhg", "rejected": "ef"},
         {"prompt": "ga", "chosen": "b ch", "rejected": "dddd"},
         {"prompt": "h", "chosen": "a", "rejected": "abcdefg"}]


def batch_of(pairs=PAIRS):
    rows = encode_pairs(TOKENIZER, pairs, SEQ)
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def naive_logps(logits, batch):
    """[pairs, 2] sums of log softmax at the answer's targets, float64, loop by loop."""
    logits = np.asarray(logits, np.float64).reshape(*batch["tokens"].shape, -1)
    out = np.zeros(batch["tokens"].shape[:2])
    for i, j, t in np.ndindex(*batch["tokens"].shape):
        if batch["loss_mask"][i, j, t]:
            row = logits[i, j, t]
            out[i, j] += row[batch["targets"][i, j, t]] - row.max() - np.log(np.exp(row - row.max()).sum())
    return out


def dpo_task(**settings):
    return DPO(SimpleNamespace(task=DPOConfig(**settings)))


def test_dpo_ignores_prompt_and_padding_positions():
    batch = batch_of()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2 * len(PAIRS), SEQ, TOKENIZER.vocab_size)).astype(np.float32) * 2
    batch["reference_logps"] = (naive_logps(logits, batch) + rng.normal(size=(3, 2))).astype(np.float32)
    task = dpo_task(beta=0.3)
    total, count, _ = task.loss(ModelOutput(logits=jnp.asarray(logits)), batch)

    masked = batch["loss_mask"].reshape(2 * len(PAIRS), SEQ) == 0
    changed = dict(batch)
    changed["targets"] = np.where(batch["loss_mask"] == 0, 5, batch["targets"]).astype(np.int32)
    other = np.where(masked[..., None], rng.normal(size=logits.shape) * 9, logits).astype(np.float32)
    total2, count2, _ = task.loss(ModelOutput(logits=jnp.asarray(other)), changed)
    assert float(count) == float(count2) == 3.0
    assert float(total) == float(total2)

    # against the formula: -log sigmoid(beta h) per pair, h from float64 log-probabilities
    pi, ref = naive_logps(logits, batch), batch["reference_logps"].astype(np.float64)
    h = (pi[:, 0] - pi[:, 1]) - (ref[:, 0] - ref[:, 1])
    np.testing.assert_allclose(float(total), np.sum(np.log1p(np.exp(-0.3 * h))), rtol=1e-5)


def test_dpo_at_the_reference_is_log_2_with_the_formula_gradient():
    batch = batch_of()
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2 * len(PAIRS), SEQ, TOKENIZER.vocab_size)).astype(np.float32)
    batch["reference_logps"] = naive_logps(logits, batch).astype(np.float32)
    beta = 0.25
    task = dpo_task(beta=beta)

    def mean_loss(x):
        total, count, _ = task.loss(ModelOutput(logits=x), batch)
        return total / count

    value, grad = jax.value_and_grad(mean_loss)(jnp.asarray(logits))
    np.testing.assert_allclose(float(value), math.log(2.0), rtol=1e-6)
    # d/d pi_c of -log sigmoid(beta h) at h = 0 is -beta/2, d/d pi_r is +beta/2; d pi / d logits at
    # a scored position is onehot(target) - softmax(logits). The loss is a mean over 3 pairs.
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(TOKENIZER.vocab_size)[batch["targets"].reshape(-1, SEQ)]
    sign = np.tile([-1.0, 1.0], len(PAIRS))[:, None, None]
    mask = batch["loss_mask"].reshape(-1, SEQ)[..., None]
    want = sign * beta / 2 / len(PAIRS) * mask * (onehot - p)
    np.testing.assert_allclose(np.asarray(grad), want, atol=1e-7)


def test_dpo_filler_rows_count_for_nothing_and_ipo_averages():
    batch = batch_of()
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, SEQ, TOKENIZER.vocab_size)).astype(np.float32)
    pi = naive_logps(logits, batch)
    batch["reference_logps"] = (pi - 1.0 * rng.random((3, 2))).astype(np.float32)
    batch["weight"] = np.array([1.0, 0.0, 1.0], np.float32)
    total, count, metrics = dpo_task(beta=0.5, loss_type="ipo").loss(
        ModelOutput(logits=jnp.asarray(logits)), batch)
    n = batch["loss_mask"].sum(-1)
    h = ((pi[:, 0] - batch["reference_logps"][:, 0]) / n[:, 0]
         - (pi[:, 1] - batch["reference_logps"][:, 1]) / n[:, 1])
    want = (h - 1.0) ** 2  # (h - 1 / (2 beta))^2
    assert float(count) == 2.0
    np.testing.assert_allclose(float(total), want[0] + want[2], rtol=1e-5)
    acc_sum, acc_count = metrics["reward_accuracy"]
    assert float(acc_count) == 2.0 and float(acc_sum) == float((h[0] > 0) + (h[2] > 0))


def tiny_decoder(head):
    config = DecoderConfig(vocab_size=TOKENIZER.vocab_size, vocab_pad_multiple=1, d_model=16,
                           num_layers=2, num_heads=2, max_seq_len=SEQ, head=head)
    return build_model(config, rngs=nnx.Rngs(0))


def test_padding_tokens_change_nothing_through_the_models():
    batch = batch_of()
    padded = dict(batch)
    padded["tokens"] = np.where(batch["segment_ids"] == 0, 7, batch["tokens"]).astype(np.int32)
    rng = np.random.default_rng(3)
    batch["reference_logps"] = padded["reference_logps"] = rng.normal(size=(3, 2)).astype(np.float32)
    for task, model in ((dpo_task(beta=0.1), tiny_decoder("lm")),
                        (Reward(SimpleNamespace(task=RewardConfig(margin=0.5))), tiny_decoder("reward"))):
        losses = [task.loss(model(**task.model_inputs(jax.tree.map(jnp.asarray, b))),
                            jax.tree.map(jnp.asarray, b))[0] for b in (batch, padded)]
        np.testing.assert_allclose(float(losses[0]), float(losses[1]), rtol=1e-6)


def test_reward_head_scores_the_last_real_token_and_the_loss_is_bradley_terry():
    batch = {k: jnp.asarray(v) for k, v in batch_of().items()}
    model = tiny_decoder("reward")
    task = Reward(SimpleNamespace(task=RewardConfig(margin=0.5)))
    output = model(**task.model_inputs(batch))
    hidden = np.asarray(output.last_hidden_state, np.float64)
    last = np.asarray(batch["segment_ids"]).reshape(6, SEQ).sum(-1) - 1
    kernel = np.asarray(model.reward_head.kernel.get_value(), np.float64).reshape(-1)
    bias = np.asarray(model.reward_head.bias.get_value(), np.float64).reshape(())
    want = hidden[np.arange(6), last] @ kernel + bias
    np.testing.assert_allclose(np.asarray(output.rewards), want, rtol=1e-5, atol=1e-6)
    total, count, metrics = task.loss(output, batch)
    r = want.reshape(3, 2)
    np.testing.assert_allclose(float(total), np.sum(np.log1p(np.exp(-(r[:, 0] - r[:, 1] - 0.5)))),
                               rtol=1e-5)
    assert float(count) == 3.0 and float(metrics["accuracy"][0]) == np.sum(r[:, 0] > r[:, 1])
