"""float16 training's dynamic loss scaling (overflowing steps skipped with the scale halved, the
scale doubled after a run of good steps, gradients unscaled exactly) and int8 training through
qwix (int8 matmuls whose gradients stay close to float32's; a run trains)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.tasks import make_task
from jaxformer.train.loss_scale import current_scale, with_loss_scale
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state, model_graphdef
from jaxformer.train.step import make_train_step
from support.devices import ONE_DEVICE


def test_loss_scale_skips_overflow_and_adapts():
    tx = with_loss_scale(optax.sgd(1.0), init_scale=8.0, period=3)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    assert float(current_scale(state)) == 8.0
    # A finite step: the update is the unscaled gradient (scaled grads 8 * g arrive).
    updates, state = tx.update({"w": 8.0 * jnp.asarray([1.0, 2.0, 3.0])}, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-1.0, -2.0, -3.0])
    # An overflow: no update at all, the scale halves.
    updates, state = tx.update({"w": jnp.asarray([1.0, jnp.inf, 3.0])}, state, params)
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.zeros(3))
    assert float(current_scale(state)) == 4.0
    for _ in range(3):  # three good steps in a row: the scale doubles
        _, state = tx.update({"w": jnp.ones(3)}, state, params)
    assert float(current_scale(state)) == 8.0


TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=16",
        "train.seq_len=16", "model.vocab_size=65", "optimizer.warmup_steps=0", "optimizer.lr=1e-2"]


def batches(count, rows=4, time=16):
    rng = np.random.default_rng(0)
    for _ in range(count):
        # A learnable pattern: each token is the previous one plus one.
        start = rng.integers(0, 65, (rows, 1))
        tokens = ((start + np.arange(time + 1)) % 65).astype(np.int32)
        yield {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
               "positions": np.tile(np.arange(time, dtype=np.int32), (rows, 1)),
               "segment_ids": np.ones((rows, time), np.int32),
               "loss_mask": np.ones((rows, time), np.float32)}


def run_steps(overrides, steps):
    config = load_config(None, TINY + overrides)
    state = create_state(config)
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    losses = []
    for b in batches(steps):
        state, metrics = step(state, b)
        losses.append(float(metrics["loss"]))
    return state, losses


def test_float16_training_with_loss_scaling_learns():
    # XLA:CPU has no float16 matmul with float32 accumulation, so attention runs as einsums here.
    state, losses = run_steps(["model.dtype=float16", "optimizer.loss_scale=dynamic",
                               "model.attention_impl=einsum"], 30)
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    assert float(current_scale(state.opt_state)) >= 1.0


def test_int8_training_through_qwix():
    from jaxformer.finetune.rewrite import int8_training

    config = load_config(None, TINY)
    model = nnx.merge(model_graphdef(config), create_state(config).params)
    quantized = int8_training(model)
    tokens = next(batches(1))["tokens"]

    def loss(m):
        return jnp.mean(jax.nn.log_softmax(m(tokens).logits)[..., 0])

    g_float = nnx.grad(loss)(model)
    g_int8 = nnx.grad(loss)(quantized)
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g_float)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g_int8)])
    assert not np.array_equal(a, b)  # the int8 path is really taken
    assert np.linalg.norm(a - b) < 0.1 * np.linalg.norm(a)
    _, losses = run_steps(["finetune.int8_training=true"], 30)
    assert losses[-1] < 0.5 * losses[0]
