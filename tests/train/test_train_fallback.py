"""An unreadable latest checkpoint (or a half-written save): resume falls back to the previous
checkpoint, says so, and deletes nothing."""

import subprocess
from pathlib import Path

import pytest

# config_path is a fixture: importing it makes it available here.
from support.locations import subprocess_env
from support.train_subprocess import command, config_path, train_losses  # noqa: F401
from support.waiting import SAFETY_TIMEOUT_S


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_unreadable_latest_checkpoint_falls_back_and_keeps_files(tmp_path, config_path):
    run_dir = tmp_path / "run"
    first = subprocess.run(command(config_path, run_dir, "train.steps=20"), env=subprocess_env(),
                           capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert first.returncode == 0, first.stderr[-2000:]
    latest = run_dir / "checkpoints" / "20"
    # Corrupt every array file of the latest checkpoint, and leave a half-written save after it.
    for data_file in (latest / "state").rglob("*"):
        if data_file.is_file() and "ocdbt.process_0" in str(data_file):
            data_file.write_bytes(b"\0garbage" + data_file.read_bytes()[-5:])
    partial = run_dir / "checkpoints" / "30.orbax-checkpoint-tmp-1234567890"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "half").write_bytes(b"x")
    before = snapshot(run_dir)

    resumed = subprocess.run(command(config_path, run_dir, "train.steps=25"), env=subprocess_env(),
                             capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = resumed.stdout
    assert "is damaged" in out and "falling back" in out, out
    assert "half-written" in out and "resuming from step 10" in out, out
    assert max(train_losses(run_dir)) == 25

    after = snapshot(run_dir)
    moved = [d for d in (run_dir / "corrupt_checkpoints").iterdir()]
    assert len(moved) == 1 and moved[0].name.startswith("20-")
    for name, content in before.items():
        if name.startswith("checkpoints/20/"):  # set aside, byte for byte
            name = str(Path("corrupt_checkpoints") / moved[0].name / Path(name).relative_to("checkpoints/20"))
        if name == "metrics.jsonl":  # appended to, never rewritten
            assert after[name].startswith(content)
        elif name in ("config.yaml", "loss.png"):  # rewritten by each run
            assert name in after
        else:
            assert after.get(name) == content, name
