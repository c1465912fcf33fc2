"""Deterministic evaluation: the mean loss over a fixed list of validation batches, no dropout."""

import math

import jax
from flax import nnx

from jaxformer.config import Config
from jaxformer.train.loss import masked_loss_sum
from jaxformer.train.step import model_inputs


def make_eval_step(graphdef: nnx.GraphDef, config: Config):
    """`eval_step(params, batch) -> (loss sum, token count)`, jit-compiled once."""
    packed = bool(config.data.packing)

    def eval_step(params, batch):
        model = nnx.merge(graphdef, params)
        logits, _ = model(batch["tokens"], **model_inputs(batch, packed))
        return masked_loss_sum(logits, batch["targets"], batch["loss_mask"])

    return jax.jit(eval_step)


def evaluate(eval_step, params, batches: list[dict]) -> dict:
    """Mean loss over every unmasked token of `batches` (already placed on devices), and its
    perplexity. The same batches every time, so values are comparable across steps and runs."""
    sums = [eval_step(params, batch) for batch in batches]  # dispatched back to back, one sync
    total, count = (sum(float(x) for x in column) for column in zip(*jax.device_get(sums)))
    loss = total / max(count, 1.0)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 80.0))}
