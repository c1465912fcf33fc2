"""Checkpoints with orbax's CheckpointManager: the train state and the data-iterator position.

Layout: `<run>/checkpoints/<step>/{state,data}`; a step directory appears only once complete
(orbax writes `<step>.orbax-checkpoint-tmp-*` and renames it on commit), so a half-written save is
never mistaken for a checkpoint. Saves are asynchronous: the arrays are copied to host memory
before `save` returns (so the next train step may donate their buffers), the files are written in
the background. `keep` bounds how many are kept (the oldest go).

Restore reads onto abstract target arrays (`jax.ShapeDtypeStruct`, with a sharding where one is
given), so a checkpoint written on one mesh restores onto another. A latest checkpoint that cannot
be read is moved aside to `<run>/corrupt_checkpoints/` (never deleted) and the previous one is
used, and the log says so.
"""

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp

from jaxformer.errors import ConfigError

TMP_MARKER = ".orbax-checkpoint-tmp"


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int, log: Callable[[str], None] = print):
        self.directory = Path(directory).absolute()
        self.quarantine = self.directory.parent / "corrupt_checkpoints"
        self.log = log
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=True))

    def save(self, step: int, state, data_iterator=None, *, wait: bool = False) -> None:
        """Start saving `state` (a pytree of arrays) and the iterator's position as `step`.
        Every process must call this (each writes its shards). `wait` blocks until committed."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        if wait:
            self.wait()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self, abstract_state, data_iterator=None):
        """(state, step) from the newest checkpoint that reads back, restoring `data_iterator` in
        place; (None, None) when there is none. abstract_state: the state's structure as
        `jax.ShapeDtypeStruct`s (with shardings for a mesh)."""
        for partial in sorted(self.directory.glob(f"*{TMP_MARKER}*")):
            self.log(f"ignoring half-written checkpoint {partial} (a save that never finished); "
                     f"left in place")
        for step in sorted(self.manager.all_steps(), reverse=True):
            mismatch = self._structure_mismatch(step, abstract_state)
            if mismatch:  # a config change, not a damaged file: stop rather than set it aside
                raise ConfigError(
                    f"checkpoint {self.directory / str(step)} holds a different train state "
                    f"({mismatch}): the model or optimizer structure changed since it was saved "
                    f"(e.g. optimizer.grad_accum_steps, or grad_clip turned on/off). Continue "
                    f"with the run's config.yaml, or start a new train.run_dir")
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            # Each process saved its own iterator position; a run with a different number of
            # processes (a bigger or smaller slice) cannot read them per process.
            writers = self._data_writers(step) if data_iterator is not None else None
            if data_iterator is not None and writers in (None, jax.process_count()):
                items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as e:  # any unreadable file: fall back, never fail the resume
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                moved = self._set_aside(step)
                self.log(f"checkpoint {self.directory / str(step)} cannot be read "
                         f"({type(e).__name__}: {reason}); moved it to {moved}, "
                         f"falling back to the previous checkpoint")
                continue
            if "data" not in items and data_iterator is not None:
                self._continue_from_process_0(step, writers, data_iterator)
            return restored.state, step
        return None, None

    def _structure_mismatch(self, step: int, abstract_state) -> str | None:
        """How the saved arrays differ from the target's (shapes and dtypes, as multisets), or
        None when they agree or the metadata cannot be read (then the restore decides)."""
        try:
            metadata = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
            saved = jax.tree.leaves(getattr(metadata, "tree", metadata),
                                    is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
            saved = sorted((tuple(x.shape), str(x.dtype)) for x in saved)
        except Exception:
            return None
        wanted = sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(abstract_state))
        if saved == wanted:
            return None
        return f"{len(saved)} arrays saved, {len(wanted)} expected; " + (
            "shapes differ" if len(saved) == len(wanted) else "a different structure")

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
        """Move an unreadable step out of the manager's way (a new save of the same step number
        would collide with it), keeping its files."""
        target = self.quarantine / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            self.quarantine.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(target))
        ocp.multihost.sync_global_processes(f"jaxformer_set_aside_{step}")
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
