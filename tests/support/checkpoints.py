"""What the checkpoint tests share: two saved steps of a small state, copied per test, and the
bytes of a directory tree to show that nothing was moved or changed."""

import shutil
from collections.abc import Callable
from pathlib import Path

import jax

from jaxformer.train.checkpoint import Checkpointer


def abstract(tree):
    """`tree`'s shapes and dtypes on this process's first device: a restore target."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


def snapshot(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under `root`."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def save_two_steps(template: Path, state_at: Callable[[int], dict]) -> Path:
    """Steps 1 and 2 of `state_at` saved under template/checkpoints; returns `template`."""
    checkpointer = Checkpointer(template / "checkpoints", keep=5, log=lambda m: None)
    for step in (1, 2):
        checkpointer.save(step, state_at(step), wait=True)
    checkpointer.close()
    return template


def fresh_copy(template: Path, destination: Path) -> Path:
    """A copy at a path of its own, so that nothing read can come from TensorStore's in-memory
    cache of the saved files."""
    shutil.copytree(template, destination)
    return destination
