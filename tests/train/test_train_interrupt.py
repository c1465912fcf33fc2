"""Ctrl-C (SIGINT) and SIGTERM: `jaxformer train` finishes the step it is on, saves a checkpoint,
exits with 128 + the signal number and no traceback; the same command then resumes from that
checkpoint."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.locations import subprocess_env
from support.waiting import SAFETY_TIMEOUT_S, wait_for

TINY = ["data.corpus=tinyshakespeare", "model.d_model=32", "model.num_layers=2", "model.num_heads=2",
        "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8", "train.eval_batches=0",
        "train.log_every=1", "train.checkpoint_every=100000", "train.progress=false",
        "train.sample_tokens=0"]


def train_command(run_dir: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu", *TINY,
            f"train.run_dir={run_dir}", f"train.steps={steps}"]


def logged_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_and_the_same_command_resumes(tmp_path, sig):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(train_command(run_dir, 100_000), env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3,
             process=process, what="three logged steps")
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=SAFETY_TIMEOUT_S)
    assert process.returncode == 128 + sig, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    stopped = [line for line in stdout.splitlines() if line.startswith(f"stopped by {sig.name}")]
    assert len(stopped) == 1, stdout
    step = int(stopped[0].split("at step ")[1].split(":")[0])
    checkpoints = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints == [step] and max(logged_steps(run_dir)) == step

    resumed = subprocess.run(train_command(run_dir, step + 3), env=subprocess_env(),
                             capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {step}" in resumed.stdout
    assert logged_steps(run_dir)[-3:] == [step + 1, step + 2, step + 3]
