"""Deterministic evaluation: the task's loss and metrics over a fixed list of batches, no dropout."""

import jax
from flax import nnx

from jaxformer.train.step import as_sums


def make_eval_step(graphdef: nnx.GraphDef, task):
    """`eval_step(params, frozen, batch) -> {name: (sum, count)}`, jit-compiled once."""

    def eval_step(params, frozen, batch):
        model = nnx.merge(graphdef, params, frozen)
        output = model(**task.model_inputs(batch))
        return as_sums(*task.loss(output, batch), output.aux, output.stats)

    return jax.jit(eval_step)


def evaluate(eval_step, params, frozen, batches: list[dict], task) -> dict:
    """The task's evaluation record (e.g. val_loss, val_ppl) from every scored item of `batches`
    (already placed on devices). The same batches every time, so values are comparable across
    steps and runs."""
    results = [eval_step(params, frozen, batch) for batch in batches]  # back to back, one sync
    totals: dict[str, list[float]] = {}
    for sums in jax.device_get(results):
        for name, (total, count) in sums.items():
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] += float(total)
            acc[1] += float(count)
    return task.eval_summary({name: total / max(count, 1.0) for name, (total, count) in totals.items()})
