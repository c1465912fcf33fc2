"""A multi-host run in miniature: two processes with 2 CPU devices each (jax.distributed, gloo).

They must train the same steps to the same losses as one process with 4 devices, and write one
checkpoint together that a single process restores. The processes are started by
`scripts/launch_local.py`, as a user would; this file is also their program (`python
tests/parallel/test_parallel_multihost.py OUT_DIR`).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.dead_proxy import with_dead_proxy
from support.locations import REPO, subprocess_env
from support.waiting import SAFETY_TIMEOUT_S
STEPS, BATCH, SEQ = 5, 8, 16


def run_config():
    from jaxformer.config import Config, OptimizerConfig, TrainLoopConfig
    from jaxformer.presets import load_model_config

    return Config(model=load_model_config("tiny-llama"),
                  optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1, decay_steps=10),
                  train=TrainLoopConfig(batch_size=BATCH, seq_len=SEQ))


def worker(out_dir: Path) -> None:
    from jaxformer.parallel import initialize

    initialize()  # reads the JAXFORMER_* variables that launch_local.py sets
    import functools

    import grain
    import jax
    import numpy as np

    from jaxformer.parallel import (MeshConfig, create_sharded, make_mesh, make_rules, named_shardings,
                                    place_batch, sharding_context)
    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.optimizer import make_optimizer
    from jaxformer.train.state import init_train_state, model_graphdef
    from jaxformer.train.step import make_train_step

    config = run_config()
    # data=2 x fsdp=2 either way; with two processes the data axis runs across them (dcn_data).
    processes = jax.process_count()
    mesh_config = MeshConfig(data=2 // processes, fsdp=2, dcn_data=processes)
    mesh, rules = make_mesh(mesh_config), make_rules()
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 1}
    init = functools.partial(init_train_state, config, jax.random.PRNGKey(0))
    state = create_sharded(init, mesh, rules)
    shardings = named_shardings(jax.eval_shape(init), mesh, rules)
    from jaxformer.tasks import make_task
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config),
                           state_shardings=shardings)

    rng = np.random.default_rng(0)
    rows = BATCH // processes
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    losses = []
    with sharding_context(mesh, rules):
        for _ in range(STEPS):
            starts = rng.integers(0, config.model.vocab_size, (BATCH, 1))
            tokens = ((starts + np.arange(SEQ + 1)) % config.model.vocab_size).astype(np.int32)
            batch = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
                     "positions": np.broadcast_to(np.arange(SEQ, dtype=np.int32), (BATCH, SEQ)).copy(),
                     "segment_ids": np.ones((BATCH, SEQ), np.int32),
                     "loss_mask": np.ones((BATCH, SEQ), np.float32)}
            # Each process hands over only its own rows of the global batch.
            state, metrics = step(state, place_batch({k: v[mine] for k, v in batch.items()}, mesh, rules))
            losses.append(float(metrics["loss"]))
    checkpointer = Checkpointer(out_dir / "checkpoints", keep=1, log=lambda message: None)
    # A data iterator's position goes with it (a global position here, as with random windows).
    data = iter(grain.MapDataset.range(100).to_iter_dataset())
    for _ in range(STEPS):
        next(data)
    checkpointer.save(STEPS, state, data, wait=True)  # every process writes its own shards
    checkpointer.close()
    # The final values gathered from every process, to check the checkpoint against.
    from jax.experimental import multihost_utils
    values = [np.asarray(v) for v in multihost_utils.process_allgather(jax.tree.leaves(state), tiled=True)]
    if jax.process_index() == 0:
        np.savez(out_dir / "final.npz", *values)
        (out_dir / "losses.json").write_text(json.dumps({"losses": losses, "processes": processes}))


def launch(out_dir: Path, processes: int, devices_per_process: int) -> dict:
    out_dir.mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "launch_local.py"), "-n", str(processes),
         "--cpu-devices", str(devices_per_process), "--", sys.executable, __file__, str(out_dir)],
        capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S, cwd=REPO,
        env=with_dead_proxy(subprocess_env()))  # this checkout, behind a proxy that cannot reach it
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads((out_dir / "losses.json").read_text())


def test_two_processes_train_like_one_and_share_a_checkpoint(tmp_path):
    import grain
    import jax
    import numpy as np

    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.state import abstract_train_state

    two = launch(tmp_path / "two", processes=2, devices_per_process=2)
    one = launch(tmp_path / "one", processes=1, devices_per_process=4)
    assert two["processes"] == 2 and one["processes"] == 1
    assert one["losses"][-1] < one["losses"][0] - 0.5  # it does train
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)

    # One checkpoint, written by both processes, restores in this single process on one device.
    abstract = abstract_train_state(run_config())  # on this process's default device
    restored = {}
    for name in ("two", "one"):
        checkpointer = Checkpointer(tmp_path / name / "checkpoints", keep=1, log=print)
        data = iter(grain.MapDataset.range(100).to_iter_dataset())
        restored[name], step = checkpointer.restore_latest(abstract, data)
        checkpointer.close()
        assert step == STEPS
        assert next(data) == STEPS  # the data continues where the processes left it
        final = np.load(tmp_path / name / "final.npz")
        leaves = jax.tree.leaves(restored[name])
        assert len(leaves) == len(final.files)
        for i, leaf in enumerate(leaves):  # exactly what the processes held at the end
            np.testing.assert_array_equal(leaf, final[f"arr_{i}"])
    assert int(restored["two"].step) == STEPS
    # And the two runs ended at the same weights, up to float rounding (which Adam's division by
    # sqrt(v) magnifies for the odd weight with a near-zero gradient; one step moves a weight ~1e-2).
    for a, b in zip(jax.tree.leaves(restored["two"]), jax.tree.leaves(restored["one"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_launcher_stops_the_others_when_one_process_fails():
    """A process that dies must not leave its peers waiting for it forever. The peers here would
    sleep past the safety timeout, so the launcher returning at all shows that it stopped them."""
    program = ("import os, sys, time\n"
               "if os.environ['JAXFORMER_PROCESS_ID'] == '1': sys.exit(3)\n"
               f"time.sleep({SAFETY_TIMEOUT_S + 60})")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "launch_local.py"), "-n", "3", "--",
                             sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=SAFETY_TIMEOUT_S)
    assert result.returncode == 3


def test_initialize_reads_the_environment(monkeypatch):
    from jaxformer.errors import ConfigError
    from jaxformer.parallel import distributed

    for var in [v for names in distributed.ENV.values() for v in names] + [
            "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
            "MEGASCALE_COORDINATOR_ADDRESS", "JAXFORMER_CPU_DEVICES"]:
        monkeypatch.delenv(var, raising=False)
    assert distributed.initialize() is False  # one process, nothing to join
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not distributed.cluster_detected()  # a one-task SLURM job is a single process
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.cluster_detected()
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")
    assert distributed.cluster_detected()
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
    monkeypatch.setenv("JAXFORMER_COORDINATOR_ADDRESS", "localhost:1234")
    with pytest.raises(ConfigError, match="set all three"):
        distributed.initialize()
    monkeypatch.setenv("JAXFORMER_NUM_PROCESSES", "two")
    monkeypatch.setenv("JAXFORMER_PROCESS_ID", "0")
    with pytest.raises(ConfigError, match="not an integer"):
        distributed.initialize()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
