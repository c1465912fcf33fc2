"""Resuming: a run killed after a checkpoint continues exactly where the uninterrupted run
would be, step for step."""

import signal
import subprocess

import pytest

# config_path is a fixture: importing it makes it available here.
from support.locations import subprocess_env
from support.train_subprocess import command, config_path, train_losses  # noqa: F401
from support.waiting import SAFETY_TIMEOUT_S, wait_for


def test_killed_run_resumes_step_for_step(tmp_path, config_path):
    run_dir = tmp_path / "killed"
    # The killed run is configured to go on far longer; it is killed (SIGKILL: no chance to
    # save) once checkpoint 20 has been committed (orbax renames the step directory into place
    # only when the save is complete). How far it gets before the kill lands does not matter:
    # the resumed run and the uninterrupted reference both go 10 steps past the furthest step
    # it logged.
    process = subprocess.Popen(command(config_path, run_dir, "train.steps=100000"),
                               env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: (run_dir / "checkpoints" / "20").is_dir(), process=process,
             what="checkpoint 20")
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(train_losses(run_dir))
    committed = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert killed_at >= committed[-1] >= 20
    steps = max(killed_at, committed[-1]) + 10

    reference = tmp_path / "reference"  # the uninterrupted run, alongside the resumed one
    runs = {name: subprocess.Popen(command(config_path, path, f"train.steps={steps}"),
                                   env=subprocess_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for name, path in (("reference", reference), ("resumed", run_dir))}
    outputs = {name: run.communicate(timeout=SAFETY_TIMEOUT_S) for name, run in runs.items()}
    for name, run in runs.items():
        assert run.returncode == 0, outputs[name][1][-2000:]
    assert f"resuming from step {committed[-1]}" in outputs["resumed"][0]

    expected, got = train_losses(reference), train_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, steps + 1))
    for step in expected:  # dropout is on: its keys must follow the step too
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step
