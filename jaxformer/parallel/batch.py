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


def batch_sharding(mesh: Mesh, rules: Rules, global_shape: tuple[int, ...]) -> NamedSharding:
    """[batch, length, ...] split over the batch's mesh axes, the rest whole."""
    logical = ("batch", "length", *([None] * (len(global_shape) - 2)))[:len(global_shape)]
    return NamedSharding(mesh, logical_to_spec(logical, global_shape, rules, dict(mesh.shape)))


def place_batch(local_batch: dict[str, Any], mesh: Mesh, rules: Rules) -> dict[str, jax.Array]:
    """This process's rows of every entry -> global arrays of `process_count` times as many rows."""
    placed = {}
    for name, value in local_batch.items():
        value = np.asarray(value)
        global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
        sharding = batch_sharding(mesh, rules, global_shape)
        placed[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return placed
