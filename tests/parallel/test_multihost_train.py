"""`jaxformer train` as a multi-host run in miniature, started as the README shows it:

    python scripts/launch_local.py -n 2 --cpu-devices 2 -- jaxformer train shakespeare_char_cpu mesh.fsdp=2

Both processes train together on one 4-device mesh; only process 0 writes the config, the
tokenizer, metrics (JSONL and TensorBoard) and the plot; both write the checkpoint, which a single
process then restores to continue the run.

Who wrote what is recorded in each process by a Python audit hook (PEP 578), installed through a
`sitecustomize` module on the processes' PYTHONPATH: every file opened for writing under the run
directory is logged with the id of the process that opened it. Checkpoint data is written by
tensorstore's C++ code, which the hook does not see; the checkpoint is checked by restoring it.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from support.dead_proxy import with_dead_proxy
from support.locations import REPO, subprocess_env
from support.waiting import SAFETY_TIMEOUT_S

TINY = ["data.corpus=tinyshakespeare", "model.d_model=32", "model.num_layers=2", "model.num_heads=2",
        "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8", "train.eval_batches=2",
        "train.eval_every=5", "train.log_every=2", "train.checkpoint_every=5",
        "train.progress=false", "train.sample_tokens=0"]

WRITE_AUDIT = '''
import os, sys

_root = os.environ["JAXFORMER_TEST_AUDIT_ROOT"]
_log = os.path.join(os.environ["JAXFORMER_TEST_AUDIT_DIR"],
                    "writes-" + os.environ.get("JAXFORMER_PROCESS_ID", "single"))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _record(path):
    path = os.path.abspath(os.fsdecode(path))
    if path.startswith(_root + os.sep):
        with open(_log, "a") as log:  # outside _root: not recorded itself
            log.write(path[len(_root) + 1:] + "\\n")


def _hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
            _record(path)
    elif event in ("os.rename", "os.replace", "shutil.copyfile", "shutil.move"):
        _record(args[1])


sys.addaudithook(_hook)
'''


def writes_by_process(audit_dir: Path) -> dict[str, set[str]]:
    """process id -> top-level names under the run directory it opened for writing."""
    return {log.name.removeprefix("writes-"): {line.split("/")[0] for line in log.read_text().split()}
            for log in audit_dir.glob("writes-*")}


def test_two_processes_write_logs_once_and_a_checkpoint_one_process_resumes(tmp_path):
    run_dir, audit_dir = tmp_path / "run", tmp_path / "audit"
    audit_dir.mkdir()
    (audit_dir / "sitecustomize.py").write_text(WRITE_AUDIT)
    env = with_dead_proxy(subprocess_env(PYTHONPATH=f"{audit_dir}:{REPO}",
                                         JAXFORMER_TEST_AUDIT_DIR=str(audit_dir),
                                         JAXFORMER_TEST_AUDIT_ROOT=str(run_dir)))
    train = [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu", *TINY,
             f"train.run_dir={run_dir}"]
    launched = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "launch_local.py"), "-n", "2", "--cpu-devices", "2",
         "--", *train, "mesh.fsdp=2", "train.steps=10"],
        env=env, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S, cwd=REPO)
    output = launched.stdout + launched.stderr
    assert launched.returncode == 0, output[-4000:]
    assert "[0] mesh data=2 x fsdp=2 x tensor=1 over 4 cpu devices, 2 process(es)" in launched.stdout

    writes = writes_by_process(audit_dir)
    assert set(writes) == {"0", "1"}, writes  # both processes ran with the hook
    assert {"config.yaml", "tokenizer", "metrics.jsonl", "tensorboard", "loss.png"} <= writes["0"]
    # Every process checks first that it can write (all of them write checkpoints): a probe file,
    # deleted at once.
    probes = {name for name in writes["1"] if name.startswith(".jaxformer-write-test-")}
    assert writes["1"] - probes <= {"checkpoints"}, writes["1"]
    # Process 1 printed no progress either: the log lines come from process 0 alone.
    assert any(line.startswith("[0] step 10: loss") for line in launched.stdout.splitlines())
    assert not any(line.startswith("[1] step") for line in launched.stdout.splitlines()), output
    # One record per logged step and evaluation: nobody else appended to the file.
    records = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 5 + 3, records  # train at steps 2..10; eval at 0, 5, 10

    # The checkpoint both processes wrote continues in one process, on one device.
    resumed = subprocess.run(train + ["train.steps=12"], env=subprocess_env(), capture_output=True,
                             text=True, timeout=SAFETY_TIMEOUT_S, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step 10" in resumed.stdout, resumed.stdout[-2000:]
    assert "step 12: loss" in resumed.stdout
