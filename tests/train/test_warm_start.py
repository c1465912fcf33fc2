"""`finetune.base` and `train.init_from` start a run through one path with one set of rules
(jaxformer/train/warm_start.py): parameters fill the run's model by path; a trained parameter the
source lacks starts fresh, a frozen one is an error; the source's extra parameters are left out;
a shape that differs names the model fields that differ. End-to-end runs from a base run are in
tests/finetune/test_finetune_runs.py and tests/tasks/test_bert_tasks.py."""

import numpy as np
import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.interop import hf
from jaxformer.models import build_model
from jaxformer.parallel import ParallelPlan
from jaxformer.train.warm_start import create_from_source

MODEL = ["model.d_model=32", "model.num_heads=4", "model.max_seq_len=32", "model.vocab_size=40",
         "model.vocab_pad_multiple=1", "model.activation=gelu_tanh", "train.seq_len=16"]
KEYS = ["finetune.base", "train.init_from"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An HF directory of a 2-layer decoder, and its parameters."""
    config = load_config(None, MODEL + ["model.num_layers=2"])
    model = build_model(config.model, rngs=nnx.Rngs(7))
    path = tmp_path_factory.mktemp("warm") / "hf"
    hf.save(path, config.model, model)
    return path, {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def start(key, path, *overrides):
    config = load_config(None, MODEL + [f"{key}={path}", *overrides])
    said = []
    state = create_from_source(config, ParallelPlan.from_config(config.mesh), said.append)
    flat = {p: np.asarray(v.get_value()) for part in (state.params, state.frozen)
            for p, v in nnx.to_flat_state(part)}
    return flat, said


@pytest.mark.parametrize("key", KEYS)
def test_either_key_fills_every_shared_parameter(source, key):
    path, params = source
    flat, said = start(key, path, "model.num_layers=2")
    for name, value in params.items():
        np.testing.assert_array_equal(flat[name], value)
    assert said == [f"starting from the weights of {path} ({key}): {len(params)} parameter arrays"]


@pytest.mark.parametrize("key", KEYS)
def test_a_trained_parameter_the_source_lacks_starts_fresh_a_frozen_one_is_an_error(source, key):
    path, params = source
    flat, said = start(key, path, "model.num_layers=3")
    np.testing.assert_array_equal(flat["layers", 1, "attention", "query", "kernel"],
                                  params["layers", 1, "attention", "query", "kernel"])
    assert "; fresh: layers/2/" in said[0]
    with pytest.raises(ConfigError, match=r"has no weights for layers/2/.*which this run freezes"):
        start(key, path, "model.num_layers=3", "train.trainable=[lm_head/*]")


@pytest.mark.parametrize("key", KEYS)
def test_the_sources_extra_parameters_are_left_out(source, key):
    path, params = source
    flat, said = start(key, path, "model.num_layers=1")
    np.testing.assert_array_equal(flat["layers", 0, "feed_forward", "up", "kernel"],
                                  params["layers", 0, "feed_forward", "up", "kernel"])
    assert said[0].endswith("; not used: layers/1")


@pytest.mark.parametrize("key", KEYS)
def test_a_shape_that_differs_names_the_model_fields(source, key):
    path, _ = source
    with pytest.raises(ConfigError, match=r"model.d_model=32 \(run: 64\)"):
        start(key, path, "model.num_layers=2", "model.d_model=64")


def test_one_source_at_a_time(source):
    path, _ = source
    with pytest.raises(ConfigError, match="both name weights to start from"):
        start("finetune.base", path, f"train.init_from={path}")
