"""Checkpoints with orbax's CheckpointManager: the train state and the data-iterator position.

Layout: `<run>/checkpoints/<step>/{state,data}`; a step directory appears only once complete
(orbax writes `<step>.orbax-checkpoint-tmp-*`, puts a commit marker in it and renames it on
commit), so a half-written save is never mistaken for a checkpoint. Saves are asynchronous: the
arrays are copied to host memory before `save` returns (so the next train step may donate their
buffers), the files are written in the background. `keep` bounds how many are kept (the oldest go,
and only after a newer one committed).

A save that fails is reported at once: the step directory is created inside `save` (an unwritable
directory fails there), and `poll`, called after every train step, raises as soon as a background
write has failed (a full disk), naming the directory, the cause and the last good checkpoint.

Restore reads onto abstract target arrays (`jax.ShapeDtypeStruct`, with a sharding where one is
given), so a checkpoint written on one mesh restores onto another. Each step's state carries the
size and CRC-32 of its files (written before the commit marker, checked before every restore), so
damaged array data is recognised. Faults are told apart (see `checkpoint_faults`): a structure
mismatch stops the run with nothing moved, proven damage sets the step aside in
`<run>/corrupt_checkpoints/` (never deleted) and falls back to the previous step, anything else is
raised with nothing moved, and a run whose checkpoints are all unusable is an error rather than a
silent start from step 0. With several processes, every decision (which
steps exist, whether one is usable) is agreed among them before it is acted on.
"""

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxformer.train.checkpoint_faults import (CHECKSUMS, CheckpointReadError, CheckpointSaveError,
                                               CheckpointStructureError, NoUsableCheckpointError,
                                               cause, damage, inspect_step, structure_differences,
                                               write_checksums)

TMP_MARKER = ".orbax-checkpoint-tmp"
OK, DAMAGED, MISMATCH, FAILED = 0, 1, 2, 3  # outcomes, worst last: processes agree on the worst


class ChecksummedStateHandler(ocp.StandardCheckpointHandler):
    """orbax's handler for the train state, which also writes the checksums of its files.
    `finalize` runs in the background save, on the primary process only, once every process has
    written its files and before the step's commit marker and rename: the files are final then
    (the processes' OCDBT databases merged by orbax's own finalize), and a committed step always
    has its checksums."""

    def finalize(self, directory) -> None:
        super().finalize(directory)
        write_checksums(Path(directory))


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int, log: Callable[[str], None] = print,
                 read_only: bool = False):
        self.directory = Path(directory).absolute()
        self.quarantine = self.directory.parent / "corrupt_checkpoints"
        self.log = log
        self.read_only = read_only  # then a damaged step is skipped, not moved
        self.pending: int | None = None  # the step being written in the background
        handlers = ocp.handlers.DefaultCheckpointHandlerRegistry()
        state_handler = ChecksummedStateHandler()
        handlers.add("state", ocp.args.StandardSave, state_handler)
        handlers.add("state", ocp.args.StandardRestore, state_handler)
        self.manager = ocp.CheckpointManager(
            self.directory, handler_registry=handlers,  # "data" gets grain's handler as before
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=not read_only, read_only=read_only,
                enable_async_checkpointing=True,
                # The step directory is made inside `save`, so an unwritable directory fails
                # there, at once, not in a background thread whose peers then wait minutes.
                async_options=ocp.AsyncOptions(create_directories_asynchronously=False)))

    # --- saving ---

    def save(self, step: int, state, data_iterator=None, *, wait: bool = False) -> None:
        """Start saving `state` (a pytree of arrays) and the iterator's position as `step`.
        Every process must call this (each writes its shards). `wait` blocks until committed.
        Raises CheckpointSaveError if this save or an earlier one failed."""
        self.poll()
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as e:
            raise self._save_failed(step, e) from e
        self.pending = step
        if wait:
            self.wait()

    def poll(self) -> None:
        """Raise CheckpointSaveError at once if the background save has failed. Cheap: the loop
        calls it after every step."""
        if self.pending is not None and not self.manager.is_saving_in_progress():
            self.wait()

    def wait(self) -> None:
        """Block until the pending save is committed (CheckpointSaveError if it failed)."""
        step, self.pending = self.pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._save_failed(step, e) from e

    def _save_failed(self, step: int | None, e: Exception) -> CheckpointSaveError:
        good = self.committed_steps()
        kept = (f"the last good checkpoint, {self.directory / str(good[-1])}, is intact"
                if good else "no checkpoint was saved before")
        return CheckpointSaveError(
            f"could not save checkpoint {step} in {self.directory} ({cause(e)}); {kept}. Make the "
            f"directory writable or free space, then rerun the same command to continue")

    def reached_preemption(self, step: int) -> bool:
        """True at the step every process agreed to stop at after one of them got SIGTERM (JAX's
        preemption sync; always False with a single process). Call it at every step."""
        return jax.process_count() > 1 and self.manager.reached_preemption(step)

    # --- restoring ---

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def committed_steps(self) -> list[int]:
        return sorted(s for s in self.manager.all_steps()
                      if (self.directory / str(s)).is_dir())

    def restore_latest(self, abstract_state, data_iterator=None, *, hint: str = ""):
        """(state, step) from the newest usable checkpoint, restoring `data_iterator` in place;
        (None, None) when the run has no checkpoint. abstract_state: the state's structure as
        `jax.ShapeDtypeStruct`s (with shardings for a mesh). `hint` ends a mismatch's message."""
        def read(step):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            # Each process saved its own iterator position; a run with a different number of
            # processes (a bigger or smaller slice) cannot read them per process.
            writers = self._data_writers(step) if data_iterator is not None else None
            if data_iterator is not None and writers in (None, jax.process_count()):
                items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
            if "data" not in items and data_iterator is not None:
                self._continue_from_process_0(step, writers, data_iterator)
            return restored.state

        return self._restore_newest(abstract_state, read, hint=hint)

    def restore_variables(self, abstract_state):
        """({"params": ..., "frozen": ...}, step) of the newest usable checkpoint, reading the
        model's variables only (no optimizer state): for sampling from a run. abstract_state: the
        train state's structure. (None, None) when there is no checkpoint."""
        target = {"params": abstract_state.params}
        if jax.tree.leaves(abstract_state.frozen):
            target["frozen"] = abstract_state.frozen

        def read(step):
            restored = ocp.PyTreeCheckpointer().restore(
                self.directory / str(step) / "state", args=ocp.args.PyTreeRestore(
                    item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True))
            return {"params": restored["params"],
                    "frozen": restored.get("frozen", abstract_state.frozen)}

        return self._restore_newest(target, read, partial=True)

    def _restore_newest(self, target, read: Callable[[int], object], *, partial: bool = False,
                        hint: str = ""):
        for half in sorted(self.directory.glob(f"*{TMP_MARKER}*")):
            self.log(f"ignoring half-written checkpoint {half} (a save that never finished); "
                     f"left in place")
        steps = _from_process_0(sorted(self.manager.all_steps(), reverse=True))
        for step in steps:
            where = self.directory / str(step)
            outcome, detail, error = _agreed(lambda: self._inspect(step, target, partial))
            if outcome == OK:
                outcome, detail, error = _agreed(lambda: (OK, read(step)))
            if outcome == OK:
                if not (where / "state" / CHECKSUMS).is_file():
                    self.log(f"checkpoint {where} has no checksums (written by an earlier "
                             f"version): it was restored without checking its data")
                return detail, step
            if outcome == MISMATCH:
                found = "; ".join(detail) if isinstance(detail, list) else detail
                raise CheckpointStructureError(
                    f"checkpoint {where} holds a train state of another structure than this "
                    f"config builds: {found}. The model or optimizer structure changed since it "
                    f"was saved{hint}. Nothing was changed: rerun with the run's own "
                    f"config.yaml, or start a fresh run with a new train.run_dir")
            if outcome == FAILED:
                if (where / "state" / CHECKSUMS).is_file():
                    why = ("the checksums written with it show no damaged file, so nothing "
                           "was moved")
                else:
                    why = ("it has no checksums (written by an earlier version), so damage "
                           "cannot be proven and nothing was moved")
                raise CheckpointReadError(
                    f"could not read checkpoint {where} ({detail}); {why}. Rerun once the cause "
                    f"is gone (if it is damaged after all, move it out of {self.directory} "
                    f"yourself)") from error
            if self.read_only:
                self.log(f"checkpoint {where} is damaged ({detail}); using the previous one")
                continue
            moved = self._set_aside(step)
            self.log(f"checkpoint {where} is damaged ({detail}); moved it to {moved}, falling "
                     f"back to the previous checkpoint")
        if steps or (self.quarantine.is_dir() and any(self.quarantine.iterdir())):
            where = self.directory if self.read_only else self.quarantine
            raise NoUsableCheckpointError(
                f"{self.directory} holds no usable checkpoint: the damaged ones are in {where} "
                f"(nothing was deleted). Starting again from step 0 here would mix two runs: use "
                f"a new train.run_dir, or put a good checkpoint back")
        return None, None

    def _inspect(self, step: int, target, partial: bool):
        # One process reads the files to check them (they are shared); the others agree on its
        # verdict through _agreed.
        verdict, saved = inspect_step(self.directory / str(step),
                                      ocp.StandardCheckpointHandler().metadata,
                                      verify=jax.process_index() == 0)
        if verdict == "damaged":
            return DAMAGED, saved
        if partial:  # compare only the parts of the state asked for
            saved = {k: v for k, v in saved.items() if k in target}
        differences = structure_differences(saved, target)
        return (MISMATCH, differences) if differences else (OK, None)

    def _data_writers(self, step: int) -> int | None:
        """How many processes wrote the data-iterator state of `step` (None: no such item)."""
        names = sorted((self.directory / str(step) / "data").glob("process_*-of-*.json"))
        return int(names[0].stem.rsplit("-of-", 1)[1]) if names else None

    def _continue_from_process_0(self, step: int, writers: int, data_iterator) -> None:
        """Every process takes process 0's saved position. Exact for iterators whose position is
        global (random windows: the global batch index); a packed-document iterator's buffers
        are per process, so its stream then differs from the interrupted run's."""
        saved = self.directory / str(step) / "data" / f"process_0-of-{writers}.json"
        data_iterator.set_state(json.loads(saved.read_text()))
        self.log(f"checkpoint {step} was written by {writers} process(es) and this run has "
                 f"{jax.process_count()}: the data continues from process 0's position")

    def _set_aside(self, step: int) -> Path:
        """Move a damaged step out of the manager's way (a new save of the same step number
        would collide with it), keeping its files."""
        target = self.quarantine / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            self.quarantine.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(target))
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"jaxformer_set_aside_{step}")
        self.manager.reload()
        return target

    def close(self) -> None:
        """Wait for the pending save and release the manager. A failure is raised (unless one
        was raised already, by `poll`, `save` or `wait`)."""
        try:
            if self.pending is not None:
                self.wait()
        finally:
            self.manager.close()


def _agreed(fn) -> tuple[int, object, Exception | None]:
    """(outcome, detail, exception) of `fn() -> (outcome, detail)`, agreed by every process:
    the worst outcome wins. An exception that proves damage counts as DAMAGED (detail: the
    reason); any other is FAILED (detail: its cause)."""
    error = None
    try:
        outcome, detail = fn()
    except Exception as e:
        reason = damage(e)
        outcome, detail, error = (DAMAGED, reason, None) if reason else (FAILED, cause(e), e)
    agreed = _worst_over_processes(outcome)
    if agreed != outcome:  # another process fared worse; its own message has the details
        detail = f"on process(es) other than {jax.process_index()}"
    return agreed, detail, error


def _worst_over_processes(outcome: int) -> int:
    if jax.process_count() == 1:
        return outcome
    return int(np.max(multihost_utils.process_allgather(np.int32(outcome))))


def _from_process_0(values: list[int]) -> list[int]:
    """Process 0's list, on every process (they act on the same steps in the same order)."""
    if jax.process_count() == 1:
        return values
    count = int(multihost_utils.broadcast_one_to_all(np.int32(len(values))))
    padded = np.zeros(count, np.int32)
    padded[:min(count, len(values))] = values[:count]
    return [int(v) for v in multihost_utils.broadcast_one_to_all(padded)]
