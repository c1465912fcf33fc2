"""The path is open: a model family and a task defined only in this file train through the
`train` code path, checkpoint and resume, with nothing outside the file changed.

The family is a two-layer bidirectional encoder with a classification head; the task asks whether
a sequence of random tokens contains token 3 (learnable from the mean-pooled encoding).
"""

import dataclasses
import json
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.config import config_from_dict
from jaxformer.errors import ConfigError
from jaxformer.models import Family, ModelOutput, get_family, register_family
from jaxformer.models.layers import run_layers
from jaxformer.nn import Attention, Embed, FeedForward, LayerNorm, LearnedPositions, Linear
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.tasks import Task, TaskConfig, register_task
from jaxformer.train import load_run, train
from support.devices import ONE_DEVICE_MESH

TIME = 12


@dataclasses.dataclass(frozen=True)
class ToyEncoderConfig:
    family: str = "toy_encoder"
    vocab_size: int = 16
    d_model: int = 32
    num_heads: int = 2
    num_layers: int = 2
    num_labels: int = 2
    max_seq_len: int = TIME
    dtype: str = "float32"
    param_dtype: str = "float32"

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


class ToyEncoder(nnx.Module):
    def __init__(self, config: ToyEncoderConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        self.embed = Embed(c.vocab_size, c.d_model, rngs=rngs)
        self.positions = LearnedPositions(c.max_seq_len, c.d_model, rngs=rngs)
        self.layers = nnx.List([TransformerBlock(
            {"attention": (Attention(c.d_model, c.num_heads, causal=False, rngs=rngs),
                           LayerNorm(c.d_model, rngs=rngs)),
             "feed_forward": (FeedForward(c.d_model, 2 * c.d_model, rngs=rngs),
                              LayerNorm(c.d_model, rngs=rngs))},
            norm_position="post") for _ in range(c.num_layers)])
        self.classifier = Linear(c.d_model, c.num_labels, in_axes=("embed",), out_axes=(None,),
                                 out_dtype=jnp.float32, rngs=rngs)

    def __call__(self, tokens, segment_ids=None, *, dropout_rng=None) -> ModelOutput:
        batch, time = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(time), (batch, time))
        x = self.embed(tokens) + self.positions(positions)
        ctx = BlockContext(positions=positions, segment_ids=segment_ids)
        x, _, aux = run_layers(self.layers, x, ctx, None, None, scan=False, remat="none")
        real = (segment_ids if segment_ids is not None else jnp.ones((batch, time)))[..., None] > 0
        pooled = jnp.sum(x * real, axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1)
        return ModelOutput(logits=self.classifier(pooled), aux=aux, last_hidden_state=x)


@dataclasses.dataclass
class ContainsConfig(TaskConfig):
    needle: int = 3


def contains_examples(seed: int, count: int, needle: int, vocab: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        length = int(rng.integers(TIME // 2, TIME + 1))
        tokens = rng.integers(4, vocab, TIME).astype(np.int32)
        if rng.random() < 0.5:
            tokens[rng.integers(0, length)] = needle
        tokens[length:] = 0
        segment_ids = (np.arange(TIME) < length).astype(np.int32)
        examples.append({"tokens": tokens, "segment_ids": segment_ids,
                         "labels": np.int32(needle in tokens[:length])})
    return examples


class Contains(Task):
    name = "toy_contains"
    config_class = ContainsConfig

    def prepare(self, run, say):
        return self.config

    def batch_spec(self, batch_size):
        return {"tokens": jax.ShapeDtypeStruct((batch_size, TIME), np.int32),
                "segment_ids": jax.ShapeDtypeStruct((batch_size, TIME), np.int32),
                "labels": jax.ShapeDtypeStruct((batch_size,), np.int32)}

    def _examples(self, seed, count):
        return contains_examples(seed, count, self.config.task.needle, self.config.model.vocab_size)

    def train_iterator(self, *, process_index, process_count):
        t = self.config.train
        ds = (grain.MapDataset.source(self._examples(t.seed, 512)).seed(t.seed).shuffle().repeat()
              [process_index::process_count].batch(t.batch_size // process_count))
        return iter(ds.to_iter_dataset())

    def eval_batches(self, *, process_index, process_count):
        rows = self.config.train.batch_size // process_count
        examples = self._examples(12345, 4 * self.config.train.batch_size)[process_index::process_count]
        return [{k: np.stack([e[k] for e in examples[i:i + rows]]) for k in examples[0]}
                for i in range(0, 4 * rows, rows)]

    def tokens_per_batch(self, batch_size):
        return batch_size * TIME

    def model_inputs(self, batch):
        return {"tokens": batch["tokens"], "segment_ids": batch["segment_ids"]}

    def loss(self, output, batch):
        log_probs = jax.nn.log_softmax(output.logits)
        nll = -jnp.take_along_axis(log_probs, batch["labels"][:, None], axis=-1)[:, 0]
        correct = (jnp.argmax(output.logits, -1) == batch["labels"]).astype(jnp.float32)
        count = jnp.float32(batch["labels"].shape[0])
        return jnp.sum(nll), count, {"accuracy": (jnp.sum(correct), count)}


register_family(Family("toy_encoder", ToyEncoderConfig, ToyEncoder, default_task="toy_contains"))
register_task(Contains)


def toy_config(run_dir, steps, **train):
    return config_from_dict({
        "model": {"family": "toy_encoder"}, "mesh": ONE_DEVICE_MESH,
        "optimizer": {"lr": 3e-3, "warmup_steps": 5, "decay_steps": 200, "weight_decay": 0.0},
        "train": {"batch_size": 16, "seq_len": TIME, "steps": steps, "eval_every": 20,
                  "eval_batches": 4, "log_every": 10, "checkpoint_every": 20, "progress": False,
                  "run_dir": str(run_dir), **train}})


def logged(run_dir, kind, key):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if r["kind"] == kind}


def test_a_family_and_task_from_a_test_file_train_checkpoint_and_resume(tmp_path):
    config = toy_config(tmp_path / "whole", 80)
    assert type(config.model) is ToyEncoderConfig and type(config.task) is ContainsConfig
    assert config.task.name == "toy_contains"  # the family's default task
    whole = train(config)
    accuracy = logged(tmp_path / "whole", "eval", "val_accuracy")
    print(accuracy)
    assert accuracy[0] < 0.75 and accuracy[80] > 0.9, accuracy  # it learned the task

    # The same run in two segments, the second resuming from the first's checkpoint at step 40:
    # the same losses at every logged step, and the same final evaluation.
    train(toy_config(tmp_path / "split", 40))
    resumed = train(toy_config(tmp_path / "split", 80))
    np.testing.assert_allclose(list(logged(tmp_path / "split", "train", "loss").values()),
                               list(logged(tmp_path / "whole", "train", "loss").values()), rtol=1e-6)
    assert resumed.val_loss == pytest.approx(whole.val_loss, rel=1e-6)

    # The run directory reloads the model of its family, holding the trained weights.
    saved_config, model, tokenizer = load_run(tmp_path / "split")
    assert isinstance(model, ToyEncoder) and tokenizer is None
    assert saved_config == toy_config(tmp_path / "split", 80)
    batch = Contains(saved_config).eval_batches(process_index=0, process_count=1)[0]
    out = model(jnp.asarray(batch["tokens"]), jnp.asarray(batch["segment_ids"]))
    assert (np.argmax(out.logits, -1) == batch["labels"]).mean() > 0.8


def test_unknown_family_and_task_list_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model.family 'encodr'.*decoder.*toy_encoder"):
        config_from_dict({"model": {"family": "encodr"}})
    with pytest.raises(ConfigError, match=r"unknown task.name 'causal'.*causal_lm"):
        config_from_dict({"task": {"name": "causal"}})
    # Keys are checked against the family's own config class.
    with pytest.raises(ConfigError, match=r"unknown config key model.num_label\b.*num_labels"):
        config_from_dict({"model": {"family": "toy_encoder", "num_label": 3}})
    assert get_family("decoder").default_task == "causal_lm"


def test_the_readme_example_family_trains(tmp_path):
    """The README's "Adding a family and a task" example, run as written, then trained."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Adding a family and a task"):]
    code = section[section.index("```python") + len("```python"):]
    exec(code[:code.index("```")], {})
    run_dir = tmp_path / "bag"
    result = train(config_from_dict({
        "model": {"family": "bag"}, "mesh": ONE_DEVICE_MESH,
        "train": {"batch_size": 32, "seq_len": 8, "steps": 30, "log_every": 10, "eval_batches": 0,
                  "checkpoint_every": 30, "progress": False, "run_dir": str(run_dir)},
        "optimizer": {"lr": 1e-2, "warmup_steps": 1, "decay_steps": 100}}))
    losses = logged(run_dir, "train", "loss")
    assert result.step == 30 and losses[30] < losses[10], losses
