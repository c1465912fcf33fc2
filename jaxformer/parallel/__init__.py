"""Meshes, logical-axis rules and sharded state: everything that knows about devices."""

from jaxformer.parallel.batch import batch_sharding, place_batch
from jaxformer.parallel.config import MeshConfig
from jaxformer.parallel.distributed import initialize, is_main_process
from jaxformer.parallel.mesh import AXES, make_mesh, resolve_axis_sizes
from jaxformer.parallel.plan import ParallelPlan
from jaxformer.parallel.rules import DEFAULT_RULES, make_rules, sharding_context
from jaxformer.parallel.state import (abstract_state, create_sharded, named_shardings,
                                      partition_specs, state_bytes_per_device, with_shardings)

__all__ = [
    "AXES", "DEFAULT_RULES", "MeshConfig", "ParallelPlan", "abstract_state", "batch_sharding",
    "create_sharded", "initialize", "is_main_process", "make_mesh", "make_rules", "named_shardings",
    "partition_specs", "place_batch", "resolve_axis_sizes", "sharding_context",
    "state_bytes_per_device", "with_shardings",
]
