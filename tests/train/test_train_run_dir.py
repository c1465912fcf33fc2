"""A rerun that cannot continue a run directory stops before any work and leaves it byte for byte
as it was; a run directory that cannot be written is a one-line error; a save that fails stops
the run at once, keeping the last good checkpoint."""

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxformer.config import load_config
from jaxformer.train import load_run, train

from support.locations import subprocess_env
from support.devices import ONE_DEVICE

TINY = [ONE_DEVICE, "data.corpus=tinyshakespeare", "model.d_model=32", "model.num_layers=2",
        "model.num_heads=2", "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8",
        "train.eval_batches=0", "train.log_every=1", "train.checkpoint_every=5",
        "train.progress=false", "train.sample_tokens=0"]


def command(run_dir, *overrides):
    return [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu", *TINY,
            f"train.run_dir={run_dir}", *overrides]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("base") / "run"
    train(load_config("shakespeare_char_cpu", TINY + [f"train.run_dir={run_dir}", "train.steps=10"]))
    return run_dir


# override -> what the one-line error must name
REFUSED = {
    "width": ("model.d_model=64", ["model.d_model: 32 in the run, 64 now"]),
    "grad_clip": ("optimizer.grad_clip=0", ["optimizer.grad_clip: 1.0 in the run, 0.0 now",
                                            "opt_state.0.mu", "opt_state.1.0.mu"]),
}


def test_refused_reruns_name_the_mismatch_and_change_nothing(finished_run, tmp_path):
    runs = {}
    for name in REFUSED:  # a copy each, all started together (they mostly wait on imports)
        runs[name] = tmp_path / name
        shutil.copytree(finished_run, runs[name])
    before = snapshot(finished_run)
    processes = {name: subprocess.Popen(command(runs[name], "train.steps=20", REFUSED[name][0]),
                                        env=subprocess_env(), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name in REFUSED}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, (name, stderr[-2000:])
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("jaxformer train: error:"), (name, stderr)
        for expected in REFUSED[name][1]:
            assert expected in lines[0], (name, expected, lines[0])
        assert "new train.run_dir" in lines[0]
        assert snapshot(runs[name]) == before, name  # config.yaml included: not rewritten


def test_empty_run_config_is_blamed_on_the_file(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "config.yaml").write_text("")
    done = subprocess.run(command(run_dir, "train.steps=20"), env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"the run's config {run_dir / 'config.yaml'} cannot be used" in done.stderr
    assert "is empty" in done.stderr and "checkpoint" not in done.stderr


@contextlib.contextmanager
def read_only(directory: Path):
    """Makes `directory` read-only while the block runs, by file permissions (not for root) or
    the immutable attribute (root, given the capability). Yields whether that worked."""
    def blocked() -> bool:
        try:
            (directory / ".probe").write_bytes(b"")
        except OSError:
            return True
        (directory / ".probe").unlink()
        return False

    os.chmod(directory, 0o555)
    try:
        if blocked():
            yield True
            return
    finally:
        os.chmod(directory, 0o755)
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0:
        try:
            if blocked():
                yield True
                return
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    yield False


def test_read_only_run_directory_is_a_one_line_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with read_only(run_dir) as done:
        if not done:  # root without the immutable attribute: a directory nobody may write in
            run_dir = Path("/sys/jaxformer-run")
        result = subprocess.run(command(run_dir, "train.steps=5"), env=subprocess_env(),
                                capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jaxformer train: error: cannot write to the run directory {run_dir} (")
    assert lines[0].endswith("make it writable, or choose another train.run_dir")


def test_failed_save_stops_the_run_at_once_and_keeps_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(command(run_dir, "train.steps=100000", "model.d_model=64"),
                               env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    checkpoints = run_dir / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints / "5" / "commit_success.txt").exists():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint 5 in time"
        time.sleep(0.05)
    with read_only(checkpoints) as done:
        if not done:  # no way to make it read-only here: a full disk, as far as it can tell
            resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
        committed = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
        try:
            stdout, stderr = process.communicate(timeout=120)  # not the 300 s orbax would wait
        finally:
            process.kill()
    assert process.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("jaxformer train: error:")]
    assert len(errors) == 1, stderr[-3000:]  # (orbax may log its own tracebacks around it)
    failed = int(errors[0].split("could not save checkpoint ")[1].split()[0])
    assert failed > committed and f"in {checkpoints} (" in errors[0]  # names the dir and cause
    assert f"{checkpoints / str(committed)}, is intact" in errors[0]
    assert "rerun the same command" in errors[0]
    # The last good checkpoint reads back.
    config, model, _ = load_run(run_dir, log=lambda message: None)
    assert config.model.d_model == 64
