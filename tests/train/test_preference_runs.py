"""Short preference runs through `jaxformer.train.train` on the shakespeare-no-e pairs: a reward
model reaches held-out pair accuracy >= 0.9; DPO from a short causal-LM run keeps its reference
(the starting checkpoint is bitwise unchanged, and the logged implicit rewards equal beta times
the log-probability change from that checkpoint, computed here from both models in float64),
prefers the chosen answers on >= 0.8 of held-out pairs and writes continuations without "e"
more often than the starting model (measured by `rule_holds`)."""

import json
import math

import numpy as np
import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.data.preference import encode_pairs, read_preferences
from jaxformer.train import train
from jaxformer.train.run_dir import load_run

SMALL = ["model.d_model=48", "model.num_layers=2", "model.num_heads=4", "model.max_seq_len=32",
         "model.vocab_pad_multiple=1", "train.seq_len=32", "train.progress=false"]


def params_of(model):
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_reward_model_learns_the_rule(tmp_path):
    config = load_config("reward_shakespeare_cpu", SMALL + [
        "task.num_pairs=600", "train.steps=60", "train.eval_every=60", "train.log_every=30",
        "train.checkpoint_every=60", f"train.run_dir={tmp_path / 'reward'}"])
    result = train(config)
    assert result.report["accuracy"] >= 0.9
    assert (tmp_path / "reward" / "preferences_val.jsonl").is_file()


@pytest.fixture(scope="module")
def start_run(tmp_path_factory):
    """A short character-level causal-LM run on Tiny Shakespeare, the same model sizes."""
    run_dir = tmp_path_factory.mktemp("pref") / "lm"
    config = load_config("shakespeare_char_cpu", SMALL + [
        "train.steps=200", "train.batch_size=16", "train.eval_every=200", "train.eval_batches=2",
        "train.log_every=100", "train.checkpoint_every=200", "train.sample_tokens=0",
        "optimizer.warmup_steps=20", "optimizer.decay_steps=200", "optimizer.lr=3e-3",
        f"train.run_dir={run_dir}"])
    train(config)
    return run_dir


def naive_logps(model, rows):
    """[pairs, 2] answer log-probabilities, float64 from the model's float32 logits."""
    tokens = np.stack([r["tokens"] for r in rows]).reshape(-1, rows[0]["tokens"].shape[-1])
    logits = np.asarray(model(tokens).logits, np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.stack([r["targets"] for r in rows]).reshape(tokens.shape)
    mask = np.stack([r["loss_mask"] for r in rows]).reshape(tokens.shape)
    picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    return (picked * mask).sum(-1).reshape(-1, 2)


def test_dpo_keeps_its_reference_and_learns_the_preference(start_run, tmp_path):
    _, start_model, tokenizer = load_run(start_run, log=lambda *_: None)
    before = params_of(start_model)
    run_dir = tmp_path / "dpo"
    beta = 0.1
    config = load_config("dpo_shakespeare_cpu", SMALL + [
        "task.num_pairs=600", "train.steps=30", "train.eval_every=30", "train.log_every=15",
        "train.checkpoint_every=30", f"task.beta={beta}", "optimizer.warmup_steps=5",
        "optimizer.decay_steps=30", "optimizer.lr=1e-3", f"train.init_from={start_run}",
        f"train.run_dir={run_dir}"])
    result = train(config)

    _, again, _ = load_run(start_run, log=lambda *_: None)
    for path, value in params_of(again).items():  # the reference's weights, bitwise
        assert value.tobytes() == before[path].tobytes(), path

    evals = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "val_loss" in r]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and first["val_loss"] == pytest.approx(math.log(2), abs=1e-5)
    # The implicit rewards of the last evaluation against the starting model, recomputed here.
    pairs = read_preferences(run_dir / "preferences_val.jsonl")
    rows = encode_pairs(tokenizer, pairs, 32)
    _, trained, _ = load_run(run_dir, log=lambda *_: None)
    rewards = beta * (naive_logps(trained, rows) - naive_logps(start_model, rows))
    assert last["val_rewards_chosen"] == pytest.approx(rewards[:, 0].mean(), abs=2e-3)
    assert last["val_rewards_rejected"] == pytest.approx(rewards[:, 1].mean(), abs=2e-3)

    report = result.report
    assert report["accuracy"] >= 0.8
    assert report["accuracy"] == pytest.approx(np.mean(rewards[:, 0] > rewards[:, 1]), abs=0.02)
    assert report["rule_sampled"] > report["reference_rule_sampled"] + 0.2
    assert report["rule_greedy"] > report["reference_rule_greedy"]
