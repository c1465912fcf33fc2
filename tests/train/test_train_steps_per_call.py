"""`train.steps_per_call`: n optimizer steps in one compiled call give the same losses as n calls
of one step, stop at every log, evaluation and checkpoint step, and resume exactly."""

import json

import numpy as np

from jaxformer.config import load_config
from jaxformer.train import train
from support.devices import ONE_DEVICE

TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=32",
        "train.seq_len=32", "train.batch_size=8", "train.eval_batches=2", "train.progress=false",
        "train.sample_tokens=0", "model.dropout=0.1"]  # dropout: the per-step keys must match too


def losses(run_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def run(run_dir, steps, *extra):
    # Boundaries that n = 8 does not divide: calls of 8, then of fewer before each of them.
    return train(load_config("shakespeare_char_cpu", TINY + [
        f"train.run_dir={run_dir}", f"train.steps={steps}", "train.log_every=5",
        "train.eval_every=15", "train.checkpoint_every=20", *extra]))


def test_steps_per_call_equals_one_step_per_call_and_resumes(tmp_path):
    single = run(tmp_path / "single", 40)
    multi = run(tmp_path / "multi", 40, "train.steps_per_call=8")
    reference = losses(tmp_path / "single")
    assert sorted(losses(tmp_path / "multi")) == sorted(reference) == list(range(5, 41, 5))
    np.testing.assert_allclose(list(losses(tmp_path / "multi").values()), list(reference.values()),
                               rtol=1e-6)
    assert abs(multi.val_loss - single.val_loss) < 1e-6

    # Stopped at step 20 (a checkpoint) and resumed: the same losses after it.
    run(tmp_path / "resumed", 20, "train.steps_per_call=8")
    run(tmp_path / "resumed", 40, "train.steps_per_call=8")
    np.testing.assert_allclose(list(losses(tmp_path / "resumed").values()),
                               list(reference.values()), rtol=1e-6)
