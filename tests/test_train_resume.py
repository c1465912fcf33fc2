"""Resuming: a run killed after a checkpoint continues exactly where the uninterrupted run
would be, step for step."""

import signal
import subprocess
import time

import pytest

# config_path is a fixture: importing it makes it available here.
from locations import subprocess_env
from train_subprocess import command, config_path, train_losses  # noqa: F401


def test_killed_run_resumes_step_for_step(tmp_path, config_path):
    reference = tmp_path / "reference"  # the uninterrupted run, alongside
    uninterrupted = subprocess.Popen(command(config_path, reference), env=subprocess_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    run_dir = tmp_path / "killed"
    # The killed run is configured to go on far longer; it is killed (SIGKILL: no chance to
    # save) once checkpoint 20 has been committed (orbax renames the step directory into place
    # only when the save is complete).
    process = subprocess.Popen(command(config_path, run_dir, "train.steps=100000"),
                               env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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

    resumed = subprocess.run(command(config_path, run_dir), env=subprocess_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {committed[-1]}" in resumed.stdout
    assert killed_at >= committed[-1] >= 20

    expected, got = train_losses(reference), train_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, 101))
    for step in expected:  # dropout is on: its keys must follow the step too
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step
