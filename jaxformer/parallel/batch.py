"""Placing batches on the mesh: each process hands over its own rows, the result is one global array.

A batch is a dict of arrays whose leading axis is the batch (`tokens`, `targets`, `positions`,
`segment_ids`, `loss_mask`, ...). Each process loads `global_batch / process_count` rows (its own
shard of the data); `jax.make_array_from_process_local_data` stitches them into a global array
split over the mesh axes that the logical name "batch" maps to.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxformer.nn.sharding import logical_to_spec
from jaxformer.parallel.rules import Rules


def batch_sharding(mesh: Mesh, rules: Rules, global_shape: tuple[int, ...],
                   leading_axes: int = 0) -> NamedSharding:
    """[..., batch, length, ...] split over the batch's mesh axes, the rest whole. `leading_axes`
    axes come before the batch axis (gradient accumulation's micro-batches)."""
    rest = len(global_shape) - leading_axes
    logical = (None,) * leading_axes + ("batch", "length", *([None] * (rest - 2)))[:rest]
    return NamedSharding(mesh, logical_to_spec(logical, global_shape, rules, dict(mesh.shape)))


def place_batch(local_batch: dict[str, Any], mesh: Mesh, rules: Rules,
                leading_axes: int = 0) -> dict[str, jax.Array]:
    """This process's rows of every entry -> global arrays of `process_count` times as many rows
    (the rows are axis `leading_axes`)."""
    placed = {}
    for name, value in local_batch.items():
        value = np.asarray(value)
        shape = list(value.shape)
        shape[leading_axes] *= jax.process_count()
        global_shape = tuple(shape)
        sharding = batch_sharding(mesh, rules, global_shape, leading_axes)
        placed[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return placed
