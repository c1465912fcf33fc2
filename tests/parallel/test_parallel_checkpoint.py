"""A checkpoint written from one mesh restores onto another (and onto one device), same values.

Saved with fsdp=8 (each device wrote 1/8 of every matrix); restored with data=2 x tensor=4 and on
a single device, through abstract targets that carry the new shardings.
"""

import functools

import jax
import numpy as np
import pytest

from jaxformer.config import Config, OptimizerConfig, TrainLoopConfig
from jaxformer.parallel import (MeshConfig, abstract_state, create_sharded, make_mesh, make_rules,
                                place_batch, sharding_context)
from jaxformer.presets import load_model_config
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import init_train_state, model_graphdef
from jaxformer.train.step import make_train_step
from jaxformer.tasks import make_task


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(checkpoint directory, the saved state's values on the host, the init function)."""
    config = Config(model=load_model_config("tiny-llama"),
                    optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1, decay_steps=10),
                    train=TrainLoopConfig(batch_size=8, seq_len=16))
    init = functools.partial(init_train_state, config, jax.random.PRNGKey(0))
    mesh, rules = make_mesh(MeshConfig(data=1, fsdp=8)), make_rules()
    state = create_sharded(init, mesh, rules)
    # [embed, vocab] split 8 ways on embed.
    assert state.params["lm_head"]["kernel"][...].addressable_shards[0].data.shape == (8, 256)
    # One real step, so the optimizer moments hold values worth checking (not zeros).
    tokens = np.random.default_rng(0).integers(0, 256, (8, 17)).astype(np.int32)
    batch = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
             "positions": np.tile(np.arange(16, dtype=np.int32), (8, 1)),
             "segment_ids": np.ones((8, 16), np.int32), "loss_mask": np.ones((8, 16), np.float32)}
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    with sharding_context(mesh, rules):
        state, _ = step(state, place_batch(batch, mesh, rules))
    directory = tmp_path_factory.mktemp("run") / "checkpoints"
    checkpointer = Checkpointer(directory, keep=1, log=print)
    checkpointer.save(1, state, wait=True)
    checkpointer.close()
    return directory, jax.device_get(jax.tree.leaves(state)), init


@pytest.mark.parametrize("mesh_config, devices", [
    (MeshConfig(data=2, tensor=4, rules={"kv_heads": None}), 8),  # 2 kv heads: not split 4 ways
    (MeshConfig(data=1), 1),
], ids=["data2_tensor4", "one_device"])
def test_restore_onto_another_mesh(saved, mesh_config, devices):
    directory, values, init = saved
    mesh, rules = make_mesh(mesh_config, jax.devices()[:devices]), make_rules(mesh_config.rules)
    target = abstract_state(init, mesh, rules)
    checkpointer = Checkpointer(directory, keep=1, log=print)
    restored, step = checkpointer.restore_latest(target)
    checkpointer.close()
    assert step == 1
    restored_leaves, target_leaves = jax.tree.leaves(restored), jax.tree.leaves(target)
    assert len(restored_leaves) == len(values) == len(target_leaves)
    for leaf, value, want in zip(restored_leaves, values, target_leaves):
        np.testing.assert_array_equal(leaf, value)
        assert leaf.sharding.is_equivalent_to(want.sharding, leaf.ndim)
    mu = restored.opt_state[0].mu if hasattr(restored.opt_state[0], "mu") else restored.opt_state[1][0].mu
    kernel = mu["layers"][0]["feed_forward"]["up"]["kernel"][...]
    assert np.abs(np.asarray(kernel)).max() > 0  # the step's moments, not a fresh init
    if devices == 8:  # [embed, mlp] with mlp on tensor=4: each device holds a quarter
        assert kernel.addressable_shards[0].data.shape == (64, 40)
