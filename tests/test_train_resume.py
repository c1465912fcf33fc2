"""Resuming: a run killed after a checkpoint continues exactly where the uninterrupted run
would be, step for step."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = Path(os.environ.get("JAXFORMER_DATA_DIR", REPO.parent / "shared" / "data"
                                  / "tinyshakespeare")) / "input.txt"
pytestmark = pytest.mark.skipif(not SHAKESPEARE.exists(), reason="Tiny Shakespeare not found")

TINY = f"""
model: {{vocab_size: 65, d_model: 32, num_layers: 2, num_heads: 2, max_seq_len: 32,
        use_bias: false, activation: gelu, dropout: 0.1}}
data: {{corpus: "{SHAKESPEARE}", tokenizer: char}}
optimizer: {{lr: 3.0e-3, min_lr: 1.0e-4, warmup_steps: 5, decay_steps: 400}}
train: {{batch_size: 8, seq_len: 32, steps: 100, eval_every: 1000, eval_batches: 0,
        log_every: 1, checkpoint_every: 10, keep_checkpoints: 100, progress: false,
        sample_tokens: 0}}
"""


def command(config_path, run_dir, *overrides):
    return [sys.executable, "-m", "jaxformer", "train", str(config_path),
            f"train.run_dir={run_dir}", *overrides]


def environment():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last record per step (a resumed run redoes the steps after its
    checkpoint; a killed run's last line may be cut short)."""
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["kind"] == "train":
            losses[record["step"]] = record["loss"]
    return losses


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_killed_run_resumes_step_for_step(tmp_path, config_path):
    reference = tmp_path / "reference"  # the uninterrupted run, alongside
    uninterrupted = subprocess.Popen(command(config_path, reference), env=environment(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    run_dir = tmp_path / "killed"
    # The killed run is configured to go on far longer; it is killed (SIGKILL: no chance to
    # save) once checkpoint 20 has been committed (orbax renames the step directory into place
    # only when the save is complete).
    process = subprocess.Popen(command(config_path, run_dir, "train.steps=100000"),
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "20").is_dir():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint 20 in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(train_losses(run_dir))
    committed = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert committed[-1] < 100, "the killed run got too far to test resuming"
    _, stderr = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, stderr[-2000:]

    resumed = subprocess.run(command(config_path, run_dir), env=environment(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {committed[-1]}" in resumed.stdout
    assert killed_at >= committed[-1] >= 20

    expected, got = train_losses(reference), train_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, 101))
    for step in expected:  # dropout is on: its keys must follow the step too
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step
