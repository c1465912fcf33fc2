"""`train.trainable`: only the chosen variables train; the rest stay bitwise unchanged and get no
optimizer state."""

import jax
import numpy as np
import pytest

from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state, model_graphdef
from jaxformer.train.step import make_train_step
from support.devices import ONE_DEVICE

TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=16",
        "train.seq_len=16", "model.vocab_size=65", "model.tie_embeddings=false",
        "optimizer.warmup_steps=0", "optimizer.lr=1e-2"]


def batch(seed, rows=4, time=16, vocab=65):
    tokens = np.random.default_rng(seed).integers(0, vocab, (rows, time + 1)).astype(np.int32)
    return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
            "positions": np.tile(np.arange(time, dtype=np.int32), (rows, 1)),
            "segment_ids": np.ones((rows, time), np.int32),
            "loss_mask": np.ones((rows, time), np.float32)}


def paths(tree) -> set[str]:
    return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("trainable, trained", [
    (["lm_head/*"], {"lm_head"}),  # a new head on a frozen body (feature extraction)
    (["layers/1/*", "final_norm/*", "lm_head/*"], {"layers", "final_norm", "lm_head"}),  # top layer
])
def test_frozen_variables_stay_bitwise_unchanged_and_have_no_optimizer_state(trainable, trained):
    config = load_config(None, TINY + [f"train.trainable={trainable}"])
    state = create_state(config)
    assert {str(k) for k in state.params.keys()} == trained
    if "layers" in trained:
        assert set(state.params["layers"].keys()) == {1}
    frozen_before = jax.tree.map(np.array, state.frozen)
    params_before = jax.tree.map(np.array, state.params)

    # The optimizer holds moments for the trainable parameters only: Adam's mu and nu have
    # exactly their paths and sizes.
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim > 0]
    trainable_size = sum(x.size for x in jax.tree.leaves(state.params))
    assert sum(x.size for x in moments) == 2 * trainable_size

    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    for seed in range(3):
        state, metrics = step(state, batch(seed))
    for before, after in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(state.frozen), strict=True):
        np.testing.assert_array_equal(np.asarray(after), before)
    moved = [np.abs(np.asarray(a) - b).max() for a, b in
             zip(jax.tree.leaves(state.params), jax.tree.leaves(params_before))]
    assert max(moved) > 1e-3


def test_everything_trains_by_default_and_bad_entries_are_named():
    config = load_config(None, TINY)
    state = create_state(config)
    assert jax.tree.leaves(state.frozen) == []
    with pytest.raises(ConfigError, match=r"'Parm' is neither a variable type.*Param"):
        create_state(load_config(None, TINY + ["train.trainable=[Parm]"]))
    with pytest.raises(ConfigError, match="selects none of the model's variables"):
        create_state(load_config(None, TINY + ["train.trainable=[nothing/*]"]))
