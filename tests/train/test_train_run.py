"""A short run on Tiny Shakespeare learns, and leaves a complete run directory behind."""

import collections
import json
import math
from pathlib import Path

import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.data import eval_batches, load_corpus
from jaxformer.train import load_run, train
from jaxformer.train.eval import evaluate, make_eval_step
from jaxformer.tasks import make_task
from jaxformer.train.state import model_graphdef, split_model
from support.devices import ONE_DEVICE



def tiny_run(run_dir, *extra):
    return load_config("shakespeare_char_cpu", [ONE_DEVICE,
        "data.corpus=tinyshakespeare", f"train.run_dir={run_dir}", "model.d_model=64",
        "model.num_layers=2", "model.num_heads=4", "model.max_seq_len=32", "train.seq_len=32",
        "train.batch_size=16", "optimizer.lr=3e-3", "optimizer.warmup_steps=10",
        "optimizer.decay_steps=200", "train.steps=150", "train.eval_every=75",
        "train.eval_batches=8", "train.log_every=25", "train.checkpoint_every=75",
        "train.progress=false", "train.sample_tokens=40", *extra])


def unigram_entropy(text: str) -> float:
    """Entropy (nats) of the character distribution: the loss of the best context-free model."""
    counts = collections.Counter(text)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def test_short_run_beats_unigram_entropy_and_writes_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "run"
    result = train(tiny_run(run_dir))
    entropy = unigram_entropy(load_corpus("tinyshakespeare").text)
    assert 3.2 < entropy < 3.4  # ln(65) = 4.17 would be a uniform guess
    assert result.step == 150
    print(f"val loss {result.val_loss:.3f}, unigram entropy {entropy:.3f}")
    assert result.val_loss < entropy - 0.6, (result.val_loss, entropy)

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    evals = {r["step"]: r["val_loss"] for r in records if r["kind"] == "eval"}
    assert train_steps == [25, 50, 75, 100, 125, 150]
    assert sorted(evals) == [0, 75, 150] and evals[0] == pytest.approx(math.log(65), abs=0.1)
    assert evals[150] < evals[75] < evals[0]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] for r in records if r["kind"] == "train")
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["150", "75"]

    output = capsys.readouterr().out
    assert "--- sample" in output and result.sample and len(result.sample) == 1 + 40

    # load_run gives back the trained model: it scores the validation batches as the run did.
    config, model, tokenizer = load_run(run_dir)
    assert config.model.vocab_size == tokenizer.vocab_size == 65
    batches = eval_batches(config.data, tokenizer, load_corpus(config.data.corpus), batch_size=16,
                           seq_len=32, num_batches=8, seed=0)
    _, params, frozen = split_model(model, config)
    task = make_task(config)
    again = evaluate(make_eval_step(model_graphdef(config), task), params, frozen, batches, task)
    assert again["val_loss"] == pytest.approx(result.val_loss, abs=1e-5)

