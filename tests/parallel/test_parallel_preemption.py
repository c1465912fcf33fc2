"""Two processes of one `jaxformer train` run: SIGTERM to one of them makes both save the same step
and exit with the same status (JAX's preemption sync point), and the rerun resumes both from it."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.dead_proxy import with_dead_proxy
from support.locations import REPO, subprocess_env

sys.path.insert(0, str(REPO / "scripts"))
from launch_local import free_port, process_env  # noqa: E402

TINY = ["data.corpus=tinyshakespeare", "model.d_model=32", "model.num_layers=1",
        "model.num_heads=2", "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8",
        "train.eval_batches=0", "train.log_every=1", "train.progress=false",
        "train.sample_tokens=0", "train.checkpoint_every=100000"]


def start(run_dir: Path, *overrides) -> list[subprocess.Popen]:
    port = free_port()
    command = [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu", *TINY,
               f"train.run_dir={run_dir}", *overrides]
    # Started as on a hand-made cluster, behind a proxy and without the launcher's no_proxy:
    # `jaxformer train` must keep the coordinator's connections away from the proxy itself.
    envs = [with_dead_proxy(process_env(i, 2, port, 1, base=subprocess_env())) for i in range(2)]
    return [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for env in envs]


def finish(processes, timeout=240) -> list[tuple[int, str, str]]:
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
        return [(p.returncode, *out) for p, out in zip(processes, outputs)]
    finally:
        for p in processes:
            p.kill()


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(tmp_path):
    run_dir = tmp_path / "run"
    processes = start(run_dir, "train.steps=100000")
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert all(p.poll() is None for p in processes), finish(processes)
        assert time.monotonic() < deadline, "no training steps in time"
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)  # the one that writes no logs
    results = finish(processes)
    statuses = [p.returncode for p in processes]
    assert statuses == [128 + signal.SIGTERM] * 2, [r[2][-2000:] for r in results]
    stopped = [line for line in results[0][1].splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1, results[0][1]
    step = int(stopped[0].split("at step ")[1].split(":")[0])
    # One checkpoint, at that step, written by both processes (each its iterator position).
    steps = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert steps == [str(step)]
    assert sorted(p.name for p in (run_dir / "checkpoints" / str(step) / "data").glob("process_*")
                  ) == ["process_0-of-2.json", "process_1-of-2.json"]

    rerun = finish(start(run_dir, f"train.steps={step + 3}"))
    assert [r[0] for r in rerun] == [0, 0], [r[2][-2000:] for r in rerun]
    assert f"resuming from step {step}" in rerun[0][1]
    # Compared as numbers: as strings, step 9 and step 12 would sort the other way round.
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [step, step + 3]
