"""`dpo`: direct preference optimisation of a language model on pairs of answers (Rafailov et al.
2023), with the IPO and hinge variants (`task.loss_type`), from `jaxformer.tasks.preference`.

The reference is the run's starting weights (`train.init_from`, or `finetune.base` for LoRA: the
base with no adapters). It is used once: at the start of the run (and of each resumed segment)
the training loop hands it to the task, which computes each pair's answer log-probabilities under
it and stores them in the pair's rows (`reference_logps`, [2] per pair: chosen, rejected); the
reference's weights are then dropped. The train step computes the policy's log-probabilities of
the same answers (summed over their tokens; IPO: averaged), and the loss from both.

Logged: the loss, the implicit rewards beta (log pi - log ref) of the chosen and rejected answers,
their margin and accuracy (the fraction of pairs with a positive margin), and the policy's answer
log-probabilities. At the end: the held-out accuracy, and for the derived `shakespeare-no-e`
pairs how often the policy's continuations of held-out prompts keep the rule
(`jaxformer.data.preference.rule_holds`), greedy and sampled, beside the reference's.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data.preference import ANSWER_CHARS, rule_holds
from jaxformer.errors import ConfigError
from jaxformer.generate import generate
from jaxformer.inference import compiled_forward
from jaxformer.tasks.pairs import PairsConfig, PairsTask, pair_batches
from jaxformer.tasks.preference import DPO_KINDS, answer_logprobs, dpo_loss, implicit_rewards
from jaxformer.tasks.registry import register_task

SAMPLES_PER_PROMPT = 4  # sampled continuations of each held-out prompt in the rule measurement


@dataclasses.dataclass
class DPOConfig(PairsConfig):
    """beta: the inverse temperature of the implicit reward (the strength of the pull towards
    the reference). label_smoothing: the assumed fraction of flipped labels (sigmoid only;
    conservative DPO). loss_type: sigmoid (DPO) | ipo | hinge."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    loss_type: str = "sigmoid"


def logps_of_rows(logits: jax.Array, batch: dict) -> jax.Array:
    """[batch, 2] answer log-probabilities (summed over answer tokens) from [2 * batch, T, V]
    logits."""
    targets = batch["targets"].reshape(-1, batch["targets"].shape[-1])
    mask = batch["loss_mask"].reshape(-1, batch["loss_mask"].shape[-1])
    return answer_logprobs(logits, targets, mask).reshape(-1, 2)


@register_task
class DPO(PairsTask):
    name = "dpo"
    head = "lm"
    config_class = DPOConfig
    needs_reference = True

    def validate(self) -> None:
        super().validate()
        t = self.config.task
        if t.loss_type not in DPO_KINDS:
            raise ConfigError(f"task.loss_type={t.loss_type!r} is not one of {list(DPO_KINDS)}")
        if t.beta <= 0:
            raise ConfigError(f"task.beta={t.beta} must be positive")
        if not 0.0 <= t.label_smoothing < 0.5:
            raise ConfigError(f"task.label_smoothing={t.label_smoothing} must be in [0, 0.5)")
        if t.label_smoothing and t.loss_type != "sigmoid":
            raise ConfigError(f"task.label_smoothing applies to loss_type=sigmoid only (now "
                              f"{t.loss_type})")

    # --- the reference ---

    def set_reference(self, model) -> None:
        """Each pair's answer log-probabilities under the reference, into its rows; for the
        derived pairs, also how often the reference's continuations keep the rule."""
        batch_size = self.config.train.batch_size
        for rows in (self.train_rows, self.val_rows):
            logps = answer_logps(model, rows, batch_size)
            for row, value in zip(rows, logps):
                row["reference_logps"] = value.astype(np.float32)
        self.reference_rates = (self.rule_rates(model) if self.derived else None)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        return super().batch_spec(batch_size) | {
            "reference_logps": jax.ShapeDtypeStruct((batch_size, 2), np.float32)}

    # --- the model ---

    def model_inputs(self, batch: dict) -> dict:
        """The rows alone: padding follows the answer, so the causal mask keeps it out."""
        return {"tokens": self.rows_of(batch, "tokens")}

    def loss(self, output, batch):
        t = self.config.task
        policy = logps_of_rows(output.logits, batch)
        reference = batch["reference_logps"].astype(jnp.float32)
        if t.loss_type == "ipo":  # averaged over each answer's tokens
            lengths = jnp.maximum(jnp.sum(batch["loss_mask"].astype(jnp.float32), -1), 1.0)
            policy, reference = policy / lengths, reference / lengths
        losses = dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
                          beta=t.beta, label_smoothing=t.label_smoothing, kind=t.loss_type)
        rewards = implicit_rewards(policy, reference, beta=t.beta)
        weight = batch["weight"].astype(jnp.float32)
        count = jnp.sum(weight)
        per_pair = lambda x: (jnp.sum(x * weight), count)  # noqa: E731
        margin = rewards[:, 0] - rewards[:, 1]
        return jnp.sum(losses * weight), count, {
            "rewards_chosen": per_pair(rewards[:, 0]), "rewards_rejected": per_pair(rewards[:, 1]),
            "reward_margin": per_pair(margin), "reward_accuracy": per_pair(margin > 0),
            "logp_chosen": per_pair(jax.lax.stop_gradient(policy[:, 0])),
            "logp_rejected": per_pair(jax.lax.stop_gradient(policy[:, 1]))}

    # --- reporting ---

    def rule_rates(self, model) -> dict[str, float]:
        """How often continuations of the held-out prompts keep the rule: greedy (one per
        prompt) and sampled at temperature 1 (`SAMPLES_PER_PROMPT` per prompt, seed 0)."""
        prompts = [self.tokenizer.encode(p["prompt"]) for p in self.val_pairs]
        greedy = generate(model, prompts, ANSWER_CHARS, temperature=0.0)
        sampled = generate(model, prompts * SAMPLES_PER_PROMPT, ANSWER_CHARS, temperature=1.0,
                           seed=0)
        rate = lambda outs: float(np.mean([rule_holds(self.tokenizer.decode(o))  # noqa: E731
                                           for o in outs]))
        examples = [self.tokenizer.decode(prompts[i] + sampled[i]) for i in range(3)]
        return {"greedy": rate(greedy), "sampled": rate(sampled), "examples": examples}

    def report(self, model, say) -> dict:
        t = self.config.task
        policy = answer_logps(model, self.val_rows, self.config.train.batch_size)
        reference = np.stack([r["reference_logps"] for r in self.val_rows])
        margin = (policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1])
        report = {"accuracy": float(np.mean(margin > 0)),
                  "policy_prefers_chosen": float(np.mean(policy[:, 0] > policy[:, 1])),
                  "reference_prefers_chosen": float(np.mean(reference[:, 0] > reference[:, 1]))}
        say(f"held-out pairs ({len(margin)}): implicit reward accuracy {report['accuracy']:.4f} "
            f"(beta {t.beta}); the policy gives the chosen answer the higher log-probability in "
            f"{report['policy_prefers_chosen']:.4f} of them (the reference: "
            f"{report['reference_prefers_chosen']:.4f})")
        if self.derived:
            rates = self.rule_rates(model)
            before = self.reference_rates
            report |= {"rule_greedy": rates["greedy"], "rule_sampled": rates["sampled"],
                       "reference_rule_greedy": before["greedy"],
                       "reference_rule_sampled": before["sampled"]}
            say(f"continuations of held-out prompts without 'e': greedy {rates['greedy']:.4f} "
                f"(reference {before['greedy']:.4f}), sampled {rates['sampled']:.4f} (reference "
                f"{before['sampled']:.4f}); sampled: "
                + " | ".join(repr(e) for e in rates["examples"]))
        return report


def answer_logps(model, rows: list[dict], batch_size: int) -> np.ndarray:
    """[pairs, 2] answer log-probabilities (chosen, rejected) of a language model for encoded
    pairs (`jaxformer.data.preference.encode_pairs`), evaluation mode."""
    forward = compiled_forward(model)
    logps = jax.jit(logps_of_rows)
    out = []
    for batch in pair_batches(rows, batch_size):
        tokens = batch["tokens"].reshape(-1, batch["tokens"].shape[-1])
        out.append(np.asarray(jax.device_get(logps(forward({"tokens": tokens}).logits, batch))))
    return np.concatenate(out)[:len(rows)]
