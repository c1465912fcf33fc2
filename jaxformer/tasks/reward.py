"""`reward`: a reward model, a decoder with a scalar head (`model.head: reward`) scoring each
answer at its last token, trained on pairs of answers with the Bradley-Terry loss
-log sigmoid(r_chosen - r_rejected - margin) (`jaxformer.tasks.preference.reward_loss`).

Data: pairs (`jaxformer.tasks.pairs`). Evaluation: the loss and the held-out pair accuracy (the
fraction of pairs whose chosen answer scores higher). At the end: that accuracy.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.errors import ConfigError
from jaxformer.inference import compiled_forward
from jaxformer.tasks.pairs import PairsConfig, PairsTask, pair_batches
from jaxformer.tasks.preference import reward_loss
from jaxformer.tasks.registry import register_task


@dataclasses.dataclass
class RewardConfig(PairsConfig):
    """margin: subtracted from r_chosen - r_rejected in the loss (0: the plain loss)."""

    margin: float = 0.0


def pair_scores(output_rewards: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[2 * batch] rewards of the model's rows -> (chosen [batch], rejected [batch])."""
    r = output_rewards.reshape(-1, 2)
    return r[:, 0], r[:, 1]


@register_task
class Reward(PairsTask):
    name = "reward"
    head = "reward"
    config_class = RewardConfig

    def validate(self) -> None:
        super().validate()
        if self.config.task.margin < 0:
            raise ConfigError(f"task.margin={self.config.task.margin} is negative: use 0 or more")

    def model_inputs(self, batch: dict) -> dict:
        """The rows and their segment ids (the head reads each row's last real token)."""
        return {"tokens": self.rows_of(batch, "tokens"),
                "segment_ids": self.rows_of(batch, "segment_ids")}

    def loss(self, output, batch):
        chosen, rejected = pair_scores(output.rewards)
        weight = batch["weight"].astype(jnp.float32)
        margin = self.config.task.margin
        losses = reward_loss(chosen, rejected, jnp.float32(margin) if margin else None)
        count = jnp.sum(weight)
        return (jnp.sum(losses * weight), count,
                {"accuracy": (jnp.sum((chosen > rejected) * weight), count),
                 "margin": (jnp.sum((chosen - rejected) * weight), count)})

    def scores(self, model) -> np.ndarray:
        """[validation pairs, 2] scores (chosen, rejected) of the model."""
        return score_pairs(model, self.val_rows, self.config.train.batch_size)

    def report(self, model, say) -> dict:
        scores = self.scores(model)
        accuracy = float(np.mean(scores[:, 0] > scores[:, 1]))
        say(f"held-out pair accuracy {accuracy:.4f} over {len(scores)} pairs (chosen scored "
            f"above rejected)")
        return {"accuracy": accuracy}


def score_pairs(model, rows: list[dict], batch_size: int) -> np.ndarray:
    """[pairs, 2] scores (chosen, rejected) of a reward model for encoded pairs
    (`jaxformer.data.preference.encode_pairs`), evaluation mode."""
    forward = compiled_forward(model)
    out = []
    for batch in pair_batches(rows, batch_size):
        inputs = {"tokens": batch["tokens"].reshape(-1, batch["tokens"].shape[-1]),
                  "segment_ids": batch["segment_ids"].reshape(-1, batch["tokens"].shape[-1])}
        out.append(np.asarray(jax.device_get(forward(inputs).rewards)).reshape(-1, 2))
    return np.concatenate(out)[:len(rows)]
