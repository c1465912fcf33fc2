"""The encoder tasks through the `train` code path on tiny models, fine-tuning from a pretrained run
(train.init_from) with the body frozen or not, and the encoder commands on the runs they leave."""

import json

import numpy as np
import pytest
from flax import nnx

from jaxformer import cli
from jaxformer.config import load_config
from jaxformer.train import load_run, train
from support.devices import ONE_DEVICE


TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.mlp_dim=64",
        "model.max_seq_len=64", "train.seq_len=64", "train.batch_size=8",
        "optimizer.warmup_steps=5", "optimizer.decay_steps=200", "train.log_every=5",
        "train.progress=false", "data.corpus=tinyshakespeare", "data.vocab_size=600"]


def losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny BERT pretrained for 60 steps (masked LM + NSP)."""
    run_dir = tmp_path_factory.mktemp("mlm") / "run"
    config = load_config("bert_shakespeare_cpu", [*TINY, f"train.run_dir={run_dir}",
                                                 "train.steps=60", "train.eval_every=60",
                                                 "train.eval_batches=2", "optimizer.lr=3e-3",
                                                 "train.checkpoint_every=60"])
    return run_dir, train(config)


def test_masked_lm_learns_and_reports(pretrained):
    run_dir, result = pretrained
    curve = losses(run_dir)
    assert curve[-1] < curve[0] - 0.5, curve  # 60 steps: 7.0 -> 6.3 nats (MLM + NSP)
    report = result.report
    assert 0 <= report["unigram_accuracy"] < 1 and report["mlm_accuracy"] > 0
    assert len(report["fill_mask"]) == 1 and len(report["fill_mask"][0]) == 5
    assert (run_dir / "tokenizer" / "vocab.txt").is_file()


def finetune(tmp_path, pretrained_dir, task, steps=30, *extra):
    run_dir = tmp_path / task
    dataset = {"classification": "tinyshakespeare-speakers",
               "token_classification": "tinyshakespeare-sentence-starts",
               "span_qa": "tinyshakespeare-who-said"}[task]
    config = load_config("bert_speakers_cpu", [ONE_DEVICE, f"task.dataset={dataset}",
        *TINY, f"task.name={task}", f"model.head={task}", f"train.run_dir={run_dir}",
        f"train.steps={steps}", f"train.eval_every={steps}", "train.eval_batches=1",
        f"train.checkpoint_every={steps}", f"train.init_from={pretrained_dir}",
        "optimizer.lr=1e-3", *extra])
    return run_dir, train(config)


def test_feature_extraction_freezes_the_pretrained_body(pretrained, tmp_path):
    run_dir, _ = pretrained
    _, source, _ = load_run(run_dir)
    out_dir, result = finetune(tmp_path, run_dir, "classification", 20,
                               "train.trainable=[classifier/*]")
    _, tuned, _ = load_run(out_dir)
    before = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(source, nnx.Param))}
    after = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(tuned, nnx.Param))}
    body = [p for p in after if p[0] in ("embeddings", "layers", "pooler")]
    assert len(body) > 10
    for path in body:  # copied from the pretrained run and never updated
        np.testing.assert_array_equal(after[path], before[path])
    assert not any(p[0] in ("mlm", "nsp") for p in after)
    assert tuned.config.num_labels == 8
    assert "accuracy" in result.report and "majority_baseline" in result.report
    labels = json.loads((out_dir / "labels.json").read_text())["labels"]
    assert labels[0] == "GLOUCESTER"

    # The classify command reads the run's labels.
    assert cli.main(["classify", str(out_dir), "Now is the winter of our discontent"]) == 0


@pytest.mark.slow
def test_full_fine_tuning_moves_the_body(pretrained, tmp_path):
    run_dir, _ = pretrained
    _, source, _ = load_run(run_dir)
    out_dir, _ = finetune(tmp_path, run_dir, "classification", 10)
    _, tuned, _ = load_run(out_dir)
    word = ("embeddings", "word", "embedding")
    get = lambda m: dict(nnx.to_flat_state(nnx.state(m, nnx.Param)))[word].get_value()
    assert not np.array_equal(get(source), get(tuned))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["token_classification", "span_qa"])
def test_other_heads_learn(pretrained, tmp_path, task, capsys):
    run_dir, _ = pretrained
    out_dir, result = finetune(tmp_path, run_dir, task, 40)
    curve = losses(out_dir)
    assert np.mean(curve[-2:]) < curve[0], curve
    text = "to be or not to be that is the question whether tis nobler in the mind"
    if task == "span_qa":
        assert "exact_match" in result.report
        args = ["classify", str(out_dir), "what light through yonder window breaks",
                "--context", "ROMEO: But soft what light through yonder window breaks"]
    else:
        assert "B" in result.report["labels"]
        args = ["classify", str(out_dir), text]
    capsys.readouterr()
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert ("->" in printed) if task == "span_qa" else ("to/" in printed)


def test_fill_mask_embed_and_attention_commands(pretrained, tmp_path, capsys):
    run_dir, _ = pretrained
    assert cli.main(["fill-mask", str(run_dir), "to be or not to [MASK]", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[MASK] 1:") and len(out.strip().splitlines()) == 4
    probabilities = [float(line.split("%")[0]) for line in out.strip().splitlines()[1:]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 100

    assert cli.main(["fill-mask", str(run_dir), "to be or not to be"]) == 2
    assert "has no [MASK] token" in capsys.readouterr().err

    npy = tmp_path / "e.npy"
    assert cli.main(["embed", str(run_dir), "to be", "or not to be", "--out", str(npy)]) == 0
    vectors = np.load(npy, allow_pickle=False)
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32

    png = tmp_path / "attention.png"
    assert cli.main(["attention", str(run_dir), "--text", "to be or not", "--pair",
                     "that is the question", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
