"""Telling checkpoint faults apart, so that each gets the right response.

- A structure mismatch (the saved train state has other tree paths, shapes or dtypes than the one
  this config builds, optimizer state included) is a config change, not damage: the run stops
  before any work, naming the differing paths; nothing is moved.
- Proven damage (no commit marker, metadata that does not parse, data the storage layer reports as
  truncated, missing or failing its checksum) sets the step aside and falls back to the one before.
- Anything else while reading (an I/O error, out of memory, an unknown exception from a newer
  orbax) proves nothing about the files: it is raised and nothing is moved.
"""

import json
import re
from pathlib import Path

import jax

from jaxformer.errors import ConfigError, UserError

COMMIT_MARKER = "commit_success.txt"  # orbax writes it into a step before renaming it into place
SHOWN = 4  # differing paths named in a message

# TensorStore reports damaged data with these status codes (OUT_OF_RANGE: a file shorter than its
# index says; DATA_LOSS: a checksum or decoding failure; NOT_FOUND: a file of a committed step gone).
_DAMAGE_STATUS = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND")


class CheckpointStructureError(ConfigError):
    """The checkpoint holds a train state of another structure than this config's."""


class CheckpointReadError(UserError):
    """A checkpoint could not be read for a reason that does not prove it damaged."""


class CheckpointSaveError(UserError):
    """A checkpoint could not be written (read-only or full disk, ...)."""


class NoUsableCheckpointError(UserError):
    """The run has checkpoints, but none of them can be read."""


def path_name(path) -> str:
    """'opt_state.1.0.mu.embed.embedding' from a key path (attribute, index and dict keys alike)."""
    parts = []
    for key in path:
        for field in ("name", "key", "idx"):
            if hasattr(key, field):
                parts.append(str(getattr(key, field)))
                break
        else:
            parts.append(str(key))
    if parts and parts[-1] == "value":  # nnx.Variable's own field: noise in a message
        parts.pop()
    return ".".join(parts)


def _arrays_by_path(tree) -> dict[str, tuple[tuple, str]]:
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))[0]
    return {path_name(path): (tuple(x.shape), str(x.dtype)) for path, x in leaves
            if hasattr(x, "shape")}


def _listed(names: list[str]) -> str:
    more = f", and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def structure_differences(saved_tree, abstract_state) -> list[str]:
    """How the saved arrays (orbax metadata: a tree of objects with shape and dtype; empty nodes
    as None) differ from `abstract_state`'s, path by path; [] when they agree."""
    saved, wanted = _arrays_by_path(saved_tree), _arrays_by_path(abstract_state)
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    changed = sorted(p for p in set(saved) & set(wanted) if saved[p] != wanted[p])
    found = []
    if extra:
        found.append(f"{len(extra)} saved array(s) that this config does not have "
                     f"({_listed(extra)})")
    if missing:
        found.append(f"{len(missing)} array(s) this config needs that were not saved "
                     f"({_listed(missing)})")
    if changed:
        found.append(f"{len(changed)} array(s) of another shape or dtype (" + _listed(
            [f"{p}: saved {_spec(saved[p])}, now {_spec(wanted[p])}" for p in changed]) + ")")
    return found


def _spec(shape_dtype: tuple) -> str:
    shape, dtype = shape_dtype
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def damage(e: BaseException) -> str | None:
    """Why the exception `e`, raised while reading a committed checkpoint, proves its files are
    damaged; None when it does not (then it may be transient, or a bug, and must be raised)."""
    for link in _chain(e):
        if isinstance(link, (MemoryError, TimeoutError, ConnectionError, PermissionError)):
            return None  # the machine or the storage service, not the files
        if isinstance(link, FileNotFoundError):
            return f"a file is missing: {link.filename or link}"
        if isinstance(link, (json.JSONDecodeError, UnicodeDecodeError)):
            return f"unreadable metadata ({type(link).__name__}: {first_line(link)})"
        status = str(link).split(":", 1)[0].strip()
        if status in _DAMAGE_STATUS:
            return f"{status}: {first_line(link)[len(status) + 1:].strip()}"
    return None


def inspect_step(step_dir: Path, read_metadata) -> tuple[str, object]:
    """("damaged", reason) or ("ok", the saved state's metadata tree) for a committed step.
    `read_metadata(path)` reads the orbax metadata of the `state` item. Errors that prove nothing
    (I/O, memory, a format this orbax does not know) propagate."""
    if not (step_dir / COMMIT_MARKER).is_file():
        return "damaged", f"it has no commit marker ({COMMIT_MARKER}): the save never completed"
    try:
        metadata = read_metadata(step_dir / "state")
    except Exception as e:
        reason = damage(e)
        if reason is None:
            raise
        return "damaged", f"its metadata cannot be read ({reason})"
    return "ok", getattr(metadata, "tree", metadata)


def first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def cause(e: BaseException) -> str:
    """A short cause for a message: the OS's words where there are some ('Permission denied',
    'No space left on device', 'File too large'), else the exception's first line."""
    for link in _chain(e):
        if isinstance(link, OSError) and link.strerror:
            return f"{link.strerror}: {link.filename}" if link.filename else link.strerror
        found = re.search(r"([^:]+?) \[os_error_code='?(\d+)'?\]", str(link))
        if found:
            return f"{found.group(1).strip()} (errno {found.group(2)})"
    return f"{type(e).__name__}: {first_line(e)}"
