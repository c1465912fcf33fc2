"""The pure, jit-compiled train step, written once for every task:

    merge the trainable and frozen state into the model -> forward -> the task's loss (+ weighted
    auxiliary losses) -> gradients of the trainable state only -> optax update.

With gradient accumulation the batch carries a leading [k] axis of micro-batches, and a
`lax.scan` over them sums the gradients of the summed losses; dividing once by the total count
makes the update exactly that of one batch k times larger, however many tokens each micro-batch
scores. Only one micro-batch's activations are alive at a time.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxformer.config import Config
from jaxformer.finetune.trainable import trainable_filter
from jaxformer.nn.lora import dropout_key as lora_dropout_key
from jaxformer.train.loss_scale import current_scale
from jaxformer.train.optimizer import make_schedule
from jaxformer.train.state import TrainState


def aux_total(aux: dict, weights: dict[str, float]) -> jax.Array:
    """sum(weight * value) over a model's auxiliary losses (weight 1.0 for unlisted names)."""
    return sum((weights.get(name, 1.0) * value for name, value in aux.items()), jnp.float32(0.0))


def make_objective(graphdef: nnx.GraphDef, task, config: Config, *, normalize: bool):
    """objective(params, frozen, batch, dropout_rng) -> (value, (loss sum, count, metrics, aux,
    stats, new frozen)). The value is loss_sum / count + aux (`normalize`, one batch) or
    loss_sum + aux * count (accumulated: divided by the total count afterwards)."""
    weights = dict(config.task.aux_weights)
    trainable = trainable_filter(config.train.trainable)

    def objective(params, frozen, batch, dropout_rng):
        model = nnx.merge(graphdef, params, frozen)
        with lora_dropout_key(dropout_rng):  # LoRA dropout's key (the call does not reach it)
            output = model(**task.model_inputs(batch), dropout_rng=dropout_rng)
        total, count, metrics = task.loss(output, batch)
        extra = aux_total(output.aux, weights)
        if normalize:
            value = total / jnp.maximum(count, 1.0) + extra
        else:
            value = total + extra * jax.lax.stop_gradient(count)
        # Non-trainable state a forward pass may change (batch statistics, RNG counters).
        _, _, new_frozen = nnx.split(model, trainable, ...)
        return value, (total, count, metrics, output.aux, output.stats, new_frozen)

    return objective


def as_sums(total, count, metrics, aux, stats=None) -> dict:
    """Everything a step reports, as (sum, count) pairs that add up across micro-batches: the
    loss, the task's metrics, the model's auxiliary losses ("aux_<name>") and statistics
    (`ModelOutput.stats`, e.g. "moe/load_expert_0", under their own names)."""
    return {"loss": (total, count), **metrics,
            **{f"aux_{name}": (value * count, count) for name, value in aux.items()},
            **{name: (value * count, count) for name, value in (stats or {}).items()}}


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, config: Config,
                    task, state_shardings=None):
    """`train_step(state, batch) -> (state, metrics)`, compiled once, the state's buffers donated
    (the caller must not reuse the state it passed in).

    batch: the task's arrays ([batch, ...]), or with `optimizer.grad_accum_steps` = k > 1 the same
    with a leading [k] axis. metrics (float32 scalars, still on device): loss (mean over the scored
    items of the whole step), each task metric's mean, each auxiliary loss ("aux_<name>"),
    grad_norm (global L2 norm of the gradient, before clipping), lr (of this update).

    state_shardings (from `jaxformer.parallel`): the new state is laid out as the old one was, so
    a sharded state stays sharded step after step (and the donated buffers can be reused).

    With `train.steps_per_call` = n > 1 the compiled function takes n steps' batches stacked on a
    new leading axis (any count up to n: the loop calls it with fewer before a log, evaluation or
    checkpoint step) and runs the steps in a `lax.scan`, returning each step's metrics stacked:
    one dispatch for n updates, the same updates as n single calls.
    """
    schedule = make_schedule(config.optimizer)
    accum = config.optimizer.grad_accum_steps
    objective = make_objective(graphdef, task, config, normalize=accum == 1)

    def scaled(params, frozen, batch, rng, scale):  # float16: S * loss (train/loss_scale.py)
        value, extras = objective(params, frozen, batch, rng)
        return value * scale, extras

    grad_fn = jax.value_and_grad(scaled, has_aux=True)

    def micro_step(state: TrainState, frozen, batch, index):
        """Gradients and sums of one (micro-)batch; `index` counts micro-batches since the start
        and picks the dropout key."""
        rng = jax.random.fold_in(state.rng, index)
        (_, (total, count, metrics, aux, stats, frozen)), grads = grad_fn(
            state.params, frozen, batch, rng, current_scale(state.opt_state))
        return grads, as_sums(total, count, metrics, aux, stats), frozen

    def gradients(state: TrainState, batch):
        if accum == 1:
            return micro_step(state, state.frozen, batch, state.step)

        def body(carry, xs):
            grads_sum, sums_sum, frozen = carry
            i, micro_batch = xs
            grads, sums, frozen = micro_step(state, frozen, micro_batch, state.step * accum + i)
            return (_add(grads_sum, grads), _add(sums_sum, sums), frozen), None

        first = jax.tree.map(lambda x: x[0], batch)
        shapes = jax.eval_shape(lambda: micro_step(state, state.frozen, first, state.step)[:2])
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        (grads, sums, frozen), _ = jax.lax.scan(body, (*zeros, state.frozen),
                                                (jnp.arange(accum), batch))
        count = sums["loss"][1]
        return jax.tree.map(lambda g: g / jnp.maximum(count, 1.0), grads), sums, frozen

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        grads, sums, frozen = gradients(state, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {name: total / jnp.maximum(count, 1.0) for name, (total, count) in sums.items()}
        metrics |= {"grad_norm": optax.tree.norm(grads) / current_scale(state.opt_state),
                    "lr": jnp.asarray(schedule(state.step), jnp.float32)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  frozen=frozen)
        return new_state, metrics

    step_fn = train_step
    if config.train.steps_per_call > 1:
        def step_fn(state: TrainState, batches: dict) -> tuple[TrainState, dict]:
            return jax.lax.scan(train_step, state, batches)

    if state_shardings is None:
        return jax.jit(step_fn, donate_argnums=0)
    return jax.jit(step_fn, donate_argnums=0, out_shardings=(state_shardings, None))
