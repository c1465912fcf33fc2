"""Shared by the tests that run `jaxformer train` in a subprocess on a tiny model."""

import json
import sys
from pathlib import Path

import pytest



TINY = f"""
model: {{vocab_size: 65, d_model: 32, num_layers: 2, num_heads: 2, max_seq_len: 32,
        use_bias: false, activation: gelu, dropout: 0.1}}
data: {{corpus: tinyshakespeare, tokenizer: char}}
optimizer: {{lr: 3.0e-3, min_lr: 1.0e-4, warmup_steps: 5, decay_steps: 400}}
train: {{batch_size: 8, seq_len: 32, steps: 100, eval_every: 1000, eval_batches: 0,
        log_every: 1, checkpoint_every: 10, keep_checkpoints: 100, progress: false,
        sample_tokens: 0}}
"""


def command(config_path, run_dir, *overrides):
    return [sys.executable, "-m", "jaxformer", "train", str(config_path),
            f"train.run_dir={run_dir}", *overrides]


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
