"""Stopping: a non-finite loss ends the run keeping the last good checkpoint; SIGTERM saves a
checkpoint and exits cleanly."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.train import NonFiniteLossError, load_run, train

from support.locations import subprocess_env
from support.waiting import SAFETY_TIMEOUT_S, wait_for
from support.devices import ONE_DEVICE

TINY = [ONE_DEVICE, "data.corpus=tinyshakespeare", "model.d_model=32", "model.num_layers=2", "model.num_heads=2",
        "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8", "train.eval_batches=0",
        "train.log_every=5", "train.checkpoint_every=5", "train.progress=false",
        "train.sample_tokens=0"]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    train(load_config("shakespeare_char_cpu", TINY + [f"train.run_dir={run_dir}", "train.steps=10"]))
    good = {k: np.asarray(v) for k, v in _params(run_dir).items()}

    # The same run continued with an absurd learning rate blows up within a few steps.
    with pytest.raises(NonFiniteLossError) as e:
        train(load_config("shakespeare_char_cpu", TINY + [
            f"train.run_dir={run_dir}", "train.steps=40", "optimizer.lr=1e10"]))
    message = str(e.value)
    assert "nan" in message.lower() or "inf" in message.lower()
    assert "last good checkpoint is step 10" in message and "optimizer.lr" in message
    assert checkpoint_steps(run_dir) == [5, 10]  # no checkpoint of a diverged state
    for name, value in _params(run_dir).items():
        assert np.isfinite(value).all()
        np.testing.assert_array_equal(value, good[name])

    # train.resume=false never starts over on top of existing checkpoints.
    with pytest.raises(ConfigError, match="train.resume=false"):
        train(load_config("shakespeare_char_cpu", TINY + [
            f"train.run_dir={run_dir}", "train.steps=40", "train.resume=false"]))
    assert checkpoint_steps(run_dir) == [5, 10]

    # A structural optimizer change cannot continue from these checkpoints: an error, and the
    # checkpoints are not mistaken for damaged ones (nothing is set aside).
    with pytest.raises(ConfigError, match="another structure"):
        train(load_config("shakespeare_char_cpu", TINY + [
            f"train.run_dir={run_dir}", "train.steps=40", "optimizer.grad_clip=0"]))
    assert checkpoint_steps(run_dir) == [5, 10] and not (run_dir / "corrupt_checkpoints").exists()


def _params(run_dir):
    from flax import nnx

    import jax

    _, model, _ = load_run(run_dir)
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    env = subprocess_env()
    process = subprocess.Popen(
        [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu", *TINY,
         f"train.run_dir={run_dir}", "train.steps=100000", "train.checkpoint_every=100000",
         "train.log_every=1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3,
             process=process, what="three logged steps")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=SAFETY_TIMEOUT_S)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr
    stopped = [line for line in stdout.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1, stdout
    step = int(stopped[0].split("at step ")[1].split(":")[0])
    assert checkpoint_steps(run_dir) == [step]
    last_logged = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    assert last_logged == step
