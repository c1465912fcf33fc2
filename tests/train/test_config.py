"""The run config: presets, dotted overrides, and errors that name the key and its close matches."""

import pytest

from jaxformer.config import Config, load_config, save_config
from jaxformer.errors import ConfigError
from jaxformer.models.costs import count_params
from jaxformer.presets import load_model_config
from jaxformer.tasks import make_task
from jaxformer.train import RunDir



def test_cpu_preset_is_nanogpts_baby_model():
    config = load_config("shakespeare_char_cpu")
    m, t, o = config.model, config.train, config.optimizer
    assert (m.num_layers, m.num_heads, m.d_model, m.max_seq_len) == (4, 4, 128, 64)
    assert (t.batch_size, t.seq_len, t.steps, t.eval_batches) == (12, 64, 2000, 20)
    assert (m.dropout, m.use_bias, m.activation, m.position) == (0.0, False, "gelu", "learned")
    assert (o.lr, o.min_lr, o.decay_steps, o.b2, o.weight_decay, o.grad_clip) == (
        1e-3, 1e-4, 2000, 0.99, 0.1, 1.0)
    # nanoGPT prints "number of parameters: 0.80M" (it leaves out the position table).
    assert round((count_params(m) - 64 * 128) / 1e6, 2) == 0.80


def test_gpu_preset_is_nanogpts_shakespeare_char():
    config = load_config("shakespeare_char")
    m = config.model
    assert (m.num_layers, m.num_heads, m.d_model, m.max_seq_len, m.dropout) == (6, 6, 384, 256, 0.2)
    assert (config.train.batch_size, config.train.steps, config.train.eval_batches) == (64, 5000, 200)
    assert round((count_params(m) - 256 * 384) / 1e6, 2) == 10.65  # nanoGPT: "10.65M"


def test_overrides_are_typed_and_nested():
    config = load_config("shakespeare_char_cpu", ["train.steps=7", "optimizer.lr=3e-4",
                                                  "model.dropout=0.1", "train.resume=true",
                                                  "mesh.rules={mlp: tensor}"])
    assert config.train.steps == 7 and isinstance(config.train.steps, int)
    assert config.optimizer.lr == pytest.approx(3e-4)
    assert config.model.dropout == pytest.approx(0.1)
    assert config.train.resume is True
    assert config.mesh.rules == {"mlp": "tensor"}


@pytest.mark.parametrize("override, expected", [
    ("train.stepz=3", "train.steps"),
    ("trian.steps=3", "train"),
    ("optimizer.weight_decy=0.1", "optimizer.weight_decay"),
    ("model.num_layer=2", "model.num_layers"),
])
def test_unknown_key_names_close_matches(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config("shakespeare_char_cpu", [override])
    message = str(e.value)
    assert f"did you mean {expected}" in message and override.split(".")[0] in message
    assert "\n" not in message


@pytest.mark.parametrize("override, key", [
    ("train.steps=abc", "train.steps"),
    ("model.num_layers=2.5", "model.num_layers"),
    ("optimizer.lr=fast", "optimizer.lr"),
    ("train.resume=maybe", "train.resume"),
    ("model.position=nope", "model.position"),
    ("train.seq_len=128", "train.seq_len"),  # longer than model.max_seq_len=64
    ("optimizer.decay_steps=50", "optimizer.decay_steps"),  # shorter than the warmup
    ("train.steps", "train.steps"),  # no '='
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("shakespeare_char_cpu", [override])


def test_unknown_preset_suggests_close_names():
    with pytest.raises(FileNotFoundError, match="shakespeare_char_cpu"):
        load_config("shakespeare_char_cpuu")


def test_vocab_size_zero_means_from_the_tokenizer(tmp_path):
    config = load_config("shakespeare_char_cpu", ["model.vocab_size=0"])
    said = []
    resolved = make_task(config).prepare(RunDir(tmp_path / "run"), said.append)
    assert resolved.model.vocab_size == 65 and said == ["model.vocab_size set to 65, the tokenizer's "
                                                        "vocabulary size"]
    assert make_task(resolved).prepare(RunDir(tmp_path / "run"), said.append) == resolved
    assert len(said) == 1  # already right: nothing to say


def test_saved_config_loads_back_equal(tmp_path):
    config = load_config("shakespeare_char", ["train.steps=11", "data.packing=false"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert isinstance(load_config(None), Config)


@pytest.mark.parametrize("text, named", [
    ("- model\n- train\n", "the top level must be a mapping of sections"),
    ("", "is empty"),
    ("# nothing but a comment\n", "is empty"),
])
def test_yaml_that_is_not_a_mapping_of_sections_is_a_clear_error(tmp_path, text, named):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=named):
        load_model_config(path)
