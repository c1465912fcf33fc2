"""Telling checkpoint faults apart, so that each gets the right response.

- A structure mismatch (the saved train state has other tree paths, shapes or dtypes than the one
  this config builds, optimizer state included) is a config change, not damage: the run stops
  before any work, naming the differing paths; nothing is moved.
- Proven damage (no commit marker, metadata that does not parse, a file whose size or CRC-32
  differs from the checksums written with it, data the storage layer reports as truncated or
  missing) sets the step aside and falls back to the one before.
- Anything else while reading (an I/O error, out of memory, an unknown exception from a newer
  orbax) proves nothing about the files: it is raised and nothing is moved.

Checksums: orbax checksums its own indexes but not the array chunks (0.12's zarr3 writer puts
crc32c on the shard index only, and offers no option for the chunks), so random bytes inside a
chunk either fail to decode with an error that does not say "damaged" or, worse, decode into wrong
weights. Hence `write_checksums`: the size and CRC-32 of every file of the saved state, written
into the state's directory once its files are final and before orbax's commit marker, so that a
committed step always has them. Steps written without them (by earlier versions) still load; only
their damage cannot be proven.
"""

import json
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax

from jaxformer.errors import ConfigError, UserError

COMMIT_MARKER = "commit_success.txt"  # orbax writes it into a step before renaming it into place
CHECKSUMS = "jaxformer_checksums.json"  # in <step>/state: {"crc32": {file: [size, crc]}}
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
            return f"unreadable metadata ({type(link).__name__}: {error_text(link)})"
        status = str(link).split(":", 1)[0].strip()
        if status in _DAMAGE_STATUS:
            return f"{status}: {error_text(link)[len(status) + 1:].strip()}"
    return None


def _crc32(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):  # zlib releases the GIL on blocks this size
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(directory: Path) -> None:
    """Record the size and CRC-32 of every file under `directory` (a saved item, complete)."""
    files = _files(directory)
    with ThreadPoolExecutor(min(8, len(files) or 1)) as pool:  # one file per thread
        crcs = list(pool.map(_crc32, files))
    table = {str(p.relative_to(directory)): [p.stat().st_size, crc] for p, crc in zip(files, crcs)}
    with open(directory / CHECKSUMS, "w") as f:
        json.dump({"crc32": table}, f, indent=0)
        f.flush()
        os.fsync(f.fileno())  # durable before orbax's commit marker says the step is


def checksum_failures(directory: Path) -> list[str] | None:
    """The files under `directory` that are missing or differ from their recorded size or CRC-32
    ([] when all match); None when no checksums were written. A file that cannot be read (no
    permission, an I/O error) raises: that is not proof of damage."""
    if not (directory / CHECKSUMS).is_file():
        return None
    table = json.loads((directory / CHECKSUMS).read_text())["crc32"]
    failures, present = [], []
    for name, (size, _) in table.items():
        try:
            found = (directory / name).stat().st_size
        except FileNotFoundError:
            failures.append(f"{name} is missing")
            continue
        if found != size:
            failures.append(f"{name} has {found} bytes, {size} were written")
        else:
            present.append(name)
    with ThreadPoolExecutor(min(8, len(present) or 1)) as pool:
        crcs = pool.map(lambda name: _crc32(directory / name), present)
        failures += [f"{name} has CRC-32 {crc}, {table[name][1]} was written"
                     for name, crc in zip(present, crcs) if crc != table[name][1]]
    return failures


def inspect_step(step_dir: Path, read_metadata, *, verify: bool = True) -> tuple[str, object]:
    """("damaged", reason) or ("ok", the saved state's metadata tree) for a committed step.
    `read_metadata(path)` reads the orbax metadata of the `state` item; `verify` compares the
    state's files with their checksums first (where the step has them). Errors that prove nothing
    (I/O, memory, a format this orbax does not know) propagate."""
    if not (step_dir / COMMIT_MARKER).is_file():
        return "damaged", f"it has no commit marker ({COMMIT_MARKER}): the save never completed"
    try:
        failures = checksum_failures(step_dir / "state") if verify else None
    except Exception as e:
        reason = damage(e)  # a checksum table that does not parse
        if reason is None:
            raise
        return "damaged", f"its checksums cannot be read ({reason})"
    if failures:
        return "damaged", (f"{len(failures)} file(s) of state/ differ from the checksums written "
                           f"with them: {_listed(failures)}")
    try:
        metadata = read_metadata(step_dir / "state")
    except Exception as e:
        reason = damage(e)
        if reason is None:
            raise
        return "damaged", f"its metadata cannot be read ({reason})"
    return "ok", getattr(metadata, "tree", metadata)


# What TensorStore and orbax append to an error's text, long and of no use in a message: the spec
# as JSON, or (orbax 0.12's read errors) the repr of the spec method where the spec was meant.
_APPENDED = re.compile(r"\s*(\[tensorstore_spec=|See full TensorStore details:).*", re.DOTALL)


def error_text(e: BaseException, limit: int = 600) -> str:
    """e's own words for a message: its first line without the appended spec or a final stop."""
    words = _APPENDED.sub("", str(e).strip()).rstrip(".")
    return words.splitlines()[0][:limit] if words else type(e).__name__


def cause(e: BaseException) -> str:
    """A short cause for a message: the OS's words where there are some ('Permission denied',
    'No space left on device', 'File too large'), else the exception's text and that of the
    innermost one it comes from (orbax's wrapper says that reading failed, TensorStore's error
    inside it says what failed)."""
    links = list(_chain(e))
    for link in links:
        if isinstance(link, OSError) and link.strerror:
            return f"{link.strerror}: {link.filename}" if link.filename else link.strerror
        found = re.search(r"([^:]+?) \[os_error_code='?(\d+)'?\]", str(link))
        if found:
            return f"{found.group(1).strip()} (errno {found.group(2)})"
    said = [f"{type(link).__name__}: {error_text(link)}" for link in (links[0], links[-1])]
    return said[0] if len(links) == 1 else f"{said[0]}, from {said[1]}"
