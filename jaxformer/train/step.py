"""The pure, jit-compiled train step: merge params, forward, masked loss, grads, optax update."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxformer.config import Config
from jaxformer.train.loss import masked_cross_entropy
from jaxformer.train.optimizer import make_schedule
from jaxformer.train.state import TrainState


def model_inputs(batch: dict, packed: bool) -> dict:
    """The model's keyword inputs from a batch. Unpacked rows are one document each, so segment
    ids are left out: the attention then uses its built-in causal mask (faster, flash on GPUs)."""
    inputs = {"positions": batch["positions"]}
    if packed:
        inputs["segment_ids"] = batch["segment_ids"]
    return inputs


def make_loss_fn(graphdef: nnx.GraphDef, config: Config):
    packed = bool(config.data.packing)

    def loss_fn(params, batch, dropout_rng):
        model = nnx.merge(graphdef, params)
        logits, _ = model(batch["tokens"], **model_inputs(batch, packed), dropout_rng=dropout_rng)
        return masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])

    return loss_fn


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, config: Config,
                    state_shardings=None):
    """`train_step(state, batch) -> (state, metrics)`, compiled once, the state's buffers donated
    (the caller must not reuse the state it passed in).

    batch: tokens, targets, positions, segment_ids [batch, time] int32, loss_mask [batch, time].
    metrics (float32 scalars, still on device): loss (this batch's mean, nats/token), grad_norm
    (global L2 norm of this batch's gradient, before clipping), lr (the rate of the update this
    batch contributes to).

    state_shardings (from `jaxformer.parallel`): the new state is laid out as the old one was, so
    a sharded state stays sharded step after step (and the donated buffers can be reused).
    """
    loss_fn = make_loss_fn(graphdef, config)
    schedule = make_schedule(config.optimizer)
    accum = config.optimizer.grad_accum_steps
    use_dropout = config.model.dropout > 0

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_rng = jax.random.fold_in(state.rng, state.step) if use_dropout else None
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, dropout_rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": jnp.asarray(schedule(state.step // accum), jnp.float32)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if state_shardings is None:
        return jax.jit(train_step, donate_argnums=0)
    return jax.jit(train_step, donate_argnums=0, out_shardings=(state_shardings, None))
