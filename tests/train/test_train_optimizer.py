"""The optimizer against formulas written independently of optax, and gradient accumulation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.config import load_config
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import decay_mask, make_optimizer, make_schedule
from jaxformer.train.state import create_state, model_graphdef
from jaxformer.train.step import make_train_step
from support.devices import ONE_DEVICE

TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=16",
        "train.seq_len=16", "model.vocab_size=65"]


def nanogpt_lr(step, lr, min_lr, warmup, decay):
    """The warmup + cosine schedule written out (nanoGPT's get_lr, warmup starting at 0)."""
    if step < warmup:
        return lr * step / warmup
    if step > decay:
        return min_lr
    ratio = (step - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def test_schedule_matches_the_formula():
    config = load_config("shakespeare_char_cpu").optimizer
    schedule = make_schedule(config)
    for step in list(range(0, 120, 3)) + list(range(120, 2100, 97)) + [2000, 2001, 5000]:
        expected = nanogpt_lr(step, config.lr, config.min_lr, config.warmup_steps,
                              config.decay_steps)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9), step


def is_weight_matrix(path) -> bool:
    name = jax.tree_util.keystr(path).removesuffix(".value")
    return name.endswith("['kernel']") or name.endswith("['embedding']")


def test_weight_decay_only_on_matrices():
    """The default `optimizer.weight_decay_params` decays weight matrices and embedding tables
    (token and position tables: both are [rows, embed]), never biases or norm scales."""
    config = load_config(None, TINY + ["optimizer.warmup_steps=0", "optimizer.weight_decay=0.5",
                                       "model.use_bias=true"])
    params = create_state(config).params
    mask = decay_mask(config.optimizer.weight_decay_params)(params)
    assert mask["position_embedding"]["embedding"].get_value() is True
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for (path, leaf), decays in zip(leaves, jax.tree.leaves(mask)):
        assert decays == is_weight_matrix(path), jax.tree_util.keystr(path)
        assert decays == (leaf.ndim >= 2 and "bias" not in jax.tree_util.keystr(path))
    # Attention's query bias is [heads, head_dim]: two axes, still a bias, so no decay.
    assert any(leaf.ndim == 2 and not is_weight_matrix(path) for path, leaf in leaves)
    assert any(not m for m in jax.tree.leaves(mask)) and any(jax.tree.leaves(mask))

    # With zero gradients Adam's step is 0, so all that moves is the decoupled decay:
    # p <- p (1 - lr * wd) on matrices, and nothing on norm scales.
    tx = make_optimizer(config.optimizer)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, jax.jit(tx.init)(params), params)
    lr, wd = config.optimizer.lr, config.optimizer.weight_decay
    for (path, p), u in zip(leaves, jax.tree.leaves(updates)):
        expected = -lr * wd * np.asarray(p) if is_weight_matrix(path) else np.zeros(p.shape)
        np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-5, atol=1e-9)


def random_batch(rng, batch, seq_len, vocab=65):
    """Random tokens; each row scores a random number of its tokens (as padded or packed rows
    do), so micro-batches of one batch hold different numbers of scored tokens."""
    tokens = rng.integers(0, vocab, (batch, seq_len + 1)).astype(np.int32)
    scored = rng.integers(1, seq_len + 1, (batch, 1))
    return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
            "positions": np.tile(np.arange(seq_len, dtype=np.int32), (batch, 1)),
            "segment_ids": np.ones((batch, seq_len), np.int32),
            "loss_mask": (np.arange(seq_len) < scored).astype(np.float32)}


def test_accumulating_k_batches_equals_one_batch_k_times_larger():
    """k micro-batches give the update of one batch k times larger: the mean loss over all of
    their scored tokens, not the mean of k micro-batch means (which weights a micro-batch with
    few scored tokens as much as one with many)."""
    k, rows = 4, 3
    common = TINY + ["optimizer.warmup_steps=0", "optimizer.grad_clip=0.5"]
    big = load_config(None, common + [f"train.batch_size={k * rows}"])
    small = load_config(None, common + [f"train.batch_size={rows}", f"optimizer.grad_accum_steps={k}"])
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, k * rows, 16) for _ in range(2)]
    graphdef = model_graphdef(big)
    counts = [batch["loss_mask"][i * rows:(i + 1) * rows].sum() for batch in batches
              for i in range(k)]
    assert len(set(counts)) > 1  # unequal micro-batches: a mean of means would differ

    big_state = create_state(big)
    initial = jax.tree.map(np.asarray, big_state.params)
    small_tx = make_optimizer(small.optimizer)
    # The same initial parameters (copies: the big steps donate their buffers).
    small_state = jax.tree.map(jnp.copy, big_state.replace(
        opt_state=jax.jit(small_tx.init)(big_state.params)))
    big_step = make_train_step(graphdef, make_optimizer(big.optimizer), big, make_task(big))
    big_losses = []
    for batch in batches:
        big_state, metrics = big_step(big_state, batch)
        big_losses.append(float(metrics["loss"]))

    small_step = make_train_step(graphdef, small_tx, small, make_task(small))
    small_losses = []
    for batch in batches:
        micro = {name: value.reshape(k, rows, *value.shape[1:]) for name, value in batch.items()}
        small_state, metrics = small_step(small_state, micro)
        small_losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(small_losses, big_losses, rtol=1e-6)

    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree.leaves(big_state.params), jax.tree.leaves(initial)))
    assert moved > 1e-4  # the updates did something
    for a, b in zip(jax.tree.leaves(big_state.params), jax.tree.leaves(small_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert int(small_state.step) == int(big_state.step) == 2  # optimizer updates
