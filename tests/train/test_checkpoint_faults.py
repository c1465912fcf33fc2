"""Restore tells faults apart, on a small pytree saved by the Checkpointer itself: damage proven by
the files is set aside (kept) and the previous step used; a read error that proves nothing is
raised with nothing moved; a different structure names the differing paths; a run whose
checkpoints are all damaged is an error, now and on every later attempt."""

import errno
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.checkpoint_faults import (CHECKSUMS, CheckpointReadError,
                                               CheckpointStructureError, NoUsableCheckpointError,
                                               structure_differences)
from support.checkpoints import abstract, fresh_copy, save_two_steps, snapshot


def state_at(step: int) -> dict:
    return {"params": {"w": jnp.full((4, 3), float(step)), "b": jnp.arange(3.0) + step},
            "opt_state": (jnp.zeros(()), {"mu": jnp.ones((4, 3)) * step}), "step": jnp.int32(step)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_two_steps(tmp_path_factory.mktemp("template"), state_at)


@pytest.fixture
def run(saved, tmp_path):
    """A run directory whose checkpoints/ holds steps 1 and 2: a copy at a path of its own, so
    that nothing read here can come from TensorStore's in-memory cache of the saved files."""
    return fresh_copy(saved, tmp_path / "run")


def restore(run: Path, target=None, messages=None):
    checkpointer = Checkpointer(run / "checkpoints", keep=5,
                                log=(messages.append if messages is not None else print))
    try:
        return checkpointer.restore_latest(target or abstract(state_at(0)))
    finally:
        checkpointer.close()


def test_intact_checkpoints_restore_the_newest(run):
    state, step = restore(run)
    assert step == 2
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 3), 2.0))


@pytest.mark.parametrize("error", [
    OSError(errno.EIO, "Input/output error"),
    MemoryError("out of memory while reading"),
    ValueError("UNAVAILABLE: the storage service did not answer"),
], ids=["io", "memory", "unavailable"])
def test_read_error_that_proves_nothing_is_raised_and_nothing_moves(run, monkeypatch, error):
    before = snapshot(run)

    def failing_restore(self, *args, **kwargs):
        raise error
    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing_restore)
    with pytest.raises(CheckpointReadError, match="nothing was moved") as info:
        restore(run)
    assert info.value.__cause__ is error and "checkpoints/2" in str(info.value)
    assert snapshot(run) == before and not (run / "corrupt_checkpoints").exists()


def test_metadata_in_an_unknown_format_is_not_called_damage(run, monkeypatch):
    """As a newer orbax might write: unreadable here, but not proven damaged."""
    before = snapshot(run)

    def unknown_format(self, directory):
        raise ValueError(f"{directory}: unsupported checkpoint format version 99")
    monkeypatch.setattr(ocp.StandardCheckpointHandler, "metadata", unknown_format)
    with pytest.raises(CheckpointReadError, match="format version 99"):
        restore(run)
    assert snapshot(run) == before


def _data_files(step_dir: Path) -> list[Path]:
    """The OCDBT database of the arrays: manifests and data files (small arrays live inline in
    the b-tree nodes), not the JSON metadata beside them."""
    return [p for p in (step_dir / "state").rglob("*")
            if p.is_file() and (p.name == "manifest.ocdbt" or p.parent.name == "d")]


# orbax's reader leaves an asyncio callback behind when a read fails: noise, not a finding.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["truncated data", "truncated data, no checksums",
                                    "no commit marker", "garbled metadata"])
def test_damaged_newest_step_is_set_aside_and_the_previous_used(run, damage):
    newest = run / "checkpoints" / "2"
    if damage.endswith("no checksums"):  # as earlier versions wrote it: the storage layer tells
        (newest / "state" / CHECKSUMS).unlink()
    if damage.startswith("truncated data"):
        for path in _data_files(newest):
            path.write_bytes(path.read_bytes()[:10])
    elif damage == "no commit marker":
        (newest / "commit_success.txt").unlink()
    else:
        (newest / "state" / "_METADATA").write_text("{not json")
    damaged = snapshot(newest)

    messages = []
    state, step = restore(run, messages=messages)
    assert step == 1
    np.testing.assert_array_equal(state["params"]["b"], np.arange(3.0) + 1)
    moved = list((run / "corrupt_checkpoints").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("2-")
    assert snapshot(moved[0]) == damaged  # kept, byte for byte
    assert any("is damaged" in m and "falling back" in m for m in messages), messages


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_all_damaged_is_an_error_now_and_later(run):
    for step in (1, 2):
        for path in _data_files(run / "checkpoints" / str(step)):
            path.write_bytes(b"")
    with pytest.raises(NoUsableCheckpointError, match="new train.run_dir"):
        restore(run)
    assert len(list((run / "corrupt_checkpoints").iterdir())) == 2
    # checkpoints/ is empty now; a second attempt must not take that for a fresh run.
    with pytest.raises(NoUsableCheckpointError):
        restore(run)


def test_a_different_structure_names_the_paths_and_moves_nothing(run):
    before = snapshot(run)
    target = state_at(0)
    target["opt_state"] = ({"mu": target["opt_state"][1]["mu"]},)  # one optimizer stage fewer
    target["params"]["w"] = jnp.zeros((4, 5))
    with pytest.raises(CheckpointStructureError) as info:
        restore(run, abstract(target))
    message = str(info.value)
    assert "opt_state.1.mu" in message and "opt_state.0.mu" in message  # saved / expected
    assert "params.w: saved float32[4,3], now float32[4,5]" in message
    assert snapshot(run) == before


def test_structure_differences_against_a_naive_comparison():
    saved = {"a": jax.ShapeDtypeStruct((2,), jnp.float32), "b": [None, jax.ShapeDtypeStruct((), jnp.int32)]}
    same = {"a": jnp.zeros(2), "b": [None, jnp.int32(0)]}
    assert structure_differences(saved, same) == []
    retyped = {"a": jnp.zeros(2, jnp.bfloat16), "b": [None, jnp.int32(0)]}
    assert structure_differences(saved, retyped) == [
        "1 array(s) of another shape or dtype (a: saved float32[2], now bfloat16[2])"]
    moved = {"a": jnp.zeros(2), "b": [jnp.int32(0)]}  # b.1 became b.0: an empty stage went away
    assert structure_differences(saved, moved) == [
        "1 saved array(s) that this config does not have (b.1)",
        "1 array(s) this config needs that were not saved (b.0)"]
