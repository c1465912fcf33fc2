"""An unreadable latest checkpoint (or a half-written save): resume falls back to the previous
checkpoint, says so, and deletes nothing."""

import json
import os
import subprocess
import sys
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


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_unreadable_latest_checkpoint_falls_back_and_keeps_files(tmp_path, config_path):
    run_dir = tmp_path / "run"
    first = subprocess.run(command(config_path, run_dir, "train.steps=20"), env=environment(),
                           capture_output=True, text=True, timeout=300)
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

    resumed = subprocess.run(command(config_path, run_dir, "train.steps=25"), env=environment(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = resumed.stdout
    assert "cannot be read" in out and "falling back" in out, out
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
