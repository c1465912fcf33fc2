"""Checksums make damaged array data provable: random bytes or a cut in a data file of the newest
step set that step aside (kept byte for byte) and the previous step is restored; a read that fails
for another reason moves nothing and its message carries the underlying error's text; a step
written without checksums (by an earlier version) still restores."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxformer.train import checkpoint, checkpoint_faults
from jaxformer.train.checkpoint import TMP_MARKER, Checkpointer
from jaxformer.train.checkpoint_faults import CHECKSUMS, COMMIT_MARKER, CheckpointReadError
from support.checkpoints import abstract, fresh_copy, save_two_steps, snapshot


def state_at(step: int) -> dict:
    # w is 16 KiB: stored as a chunk in an OCDBT data file (values under 1 KiB live inline in the
    # b-tree nodes, which OCDBT checksums itself). float32 noise, so zstd stores it nearly raw.
    w = np.random.default_rng(step).normal(size=(64, 64)).astype(np.float32)
    return {"params": {"w": jnp.asarray(w), "b": jnp.arange(3.0) + step}, "step": jnp.int32(step)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_two_steps(tmp_path_factory.mktemp("template"), state_at)


@pytest.fixture
def run(saved, tmp_path):
    """A copy at a path of its own, so that nothing read comes from TensorStore's cache."""
    return fresh_copy(saved, tmp_path / "run")


def restore(run: Path, messages: list):
    checkpointer = Checkpointer(run / "checkpoints", keep=5, log=messages.append)
    try:
        return checkpointer.restore_latest(abstract(state_at(0)))
    finally:
        checkpointer.close()


def array_data_file(step_dir: Path) -> Path:
    """The data file that holds w's chunk: the largest file of the state."""
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def test_checksums_are_written_before_the_commit_marker(tmp_path, monkeypatch):
    seen = []

    def recording(directory):
        step_dir = directory.parent  # <step>.orbax-checkpoint-tmp-*/state.orbax-checkpoint-tmp-*
        seen.append((TMP_MARKER in step_dir.name, (step_dir / COMMIT_MARKER).exists()))
        write_checksums(directory)
    write_checksums = checkpoint.write_checksums
    monkeypatch.setattr(checkpoint, "write_checksums", recording)
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=5, log=lambda m: None)
    checkpointer.save(1, state_at(1), wait=True)
    checkpointer.close()
    assert seen == [(True, False)]  # in the uncommitted step, once
    assert (tmp_path / "checkpoints" / "1" / "state" / CHECKSUMS).is_file()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_damaged_array_data_is_set_aside_and_the_previous_step_restored(run, damage):
    newest = run / "checkpoints" / "2"
    data = array_data_file(newest)
    content = data.read_bytes()
    if damage == "random bytes":  # same size: only the checksum can tell
        noise = np.random.default_rng(0).bytes(512)
        data.write_bytes(content[:1000] + noise + content[1000 + len(noise):])
    else:
        data.write_bytes(content[:len(content) // 2])
    damaged = snapshot(newest)

    messages = []
    state, step = restore(run, messages)
    assert step == 1
    np.testing.assert_array_equal(state["params"]["w"], state_at(1)["params"]["w"])
    moved = list((run / "corrupt_checkpoints").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("2-")
    assert snapshot(moved[0]) == damaged  # kept, byte for byte
    assert not newest.exists()
    [message] = [m for m in messages if "is damaged" in m]
    assert data.name in message and "falling back" in message
    assert ("CRC-32" if damage == "random bytes" else "bytes, ") in message


def test_a_file_that_cannot_be_read_moves_nothing(run, monkeypatch):
    """A permission error while checking (the test runs as root, so chmod would not do)."""
    before = snapshot(run)
    crc32 = checkpoint_faults._crc32

    def denied(path):
        if path == array_data_file(run / "checkpoints" / "2"):
            raise PermissionError(13, "Permission denied", str(path))
        return crc32(path)
    monkeypatch.setattr(checkpoint_faults, "_crc32", denied)
    with pytest.raises(CheckpointReadError, match="nothing was moved") as info:
        restore(run, [])
    assert "Permission denied" in str(info.value) and "checkpoints/2" in str(info.value)
    assert snapshot(run) == before and not (run / "corrupt_checkpoints").exists()


def test_a_read_error_of_intact_files_moves_nothing_and_shows_its_text(run, monkeypatch):
    """orbax 0.12 wraps TensorStore's error in one whose text ends in a bound method's repr."""
    before = snapshot(run)

    def failing_restore(self, *args, **kwargs):
        try:
            raise ValueError('FAILED_PRECONDITION: Error reading "params.w/0.0": the disk said no '
                             '[tensorstore_spec=\'{"driver": "zarr"}\']')
        except ValueError as e:
            raise Exception("Encountered error while reading array index: (slice(0, 64, 1),). "
                            "See full TensorStore details: <bound method spec of TensorStore({"
                            "\n 'driver': 'zarr'})>.") from e
    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing_restore)
    with pytest.raises(CheckpointReadError) as info:
        restore(run, [])
    message = str(info.value)
    assert 'Error reading "params.w/0.0": the disk said no' in message
    assert "bound method" not in message and "tensorstore_spec" not in message
    assert "show no damaged file" in message and "nothing was moved" in message
    assert snapshot(run) == before


def without_checksums(run: Path) -> None:
    """Steps as earlier versions wrote them: the same files, less the checksums."""
    for table in (run / "checkpoints").glob(f"*/state/{CHECKSUMS}"):
        table.unlink()


def test_a_step_without_checksums_still_restores(run):
    without_checksums(run)
    messages = []
    state, step = restore(run, messages)
    assert step == 2
    np.testing.assert_array_equal(state["params"]["w"], state_at(2)["params"]["w"])
    assert any("no checksums" in m for m in messages), messages


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damage_without_checksums_cannot_be_proven_and_moves_nothing(run):
    without_checksums(run)
    data = array_data_file(run / "checkpoints" / "2")
    data.write_bytes(np.random.default_rng(0).bytes(data.stat().st_size))  # zstd's header too
    before = snapshot(run)
    with pytest.raises(CheckpointReadError) as info:
        restore(run, [])
    message = str(info.value)
    assert "damage cannot be proven" in message and "nothing was moved" in message
    assert "ZSTD" in message and "bound method" not in message  # TensorStore's own words
    assert snapshot(run) == before
