"""One object that carries a run's parallelism: the mesh, the rules, and what follows from them.

    plan = ParallelPlan.from_config(config.mesh)
    state = plan.create(init_fn)                 # born sharded
    step = plan.bind(jax.jit(train_step, out_shardings=(plan.shardings(init_fn), None)))
    state, metrics = step(state, plan.place(local_batch))

The training loop needs nothing else from this package (apart from `initialize()` at start-up).
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh

from jaxformer.parallel.batch import place_batch
from jaxformer.parallel.config import MeshConfig
from jaxformer.parallel.mesh import make_mesh
from jaxformer.parallel.rules import Rules, make_rules, sharding_context
from jaxformer.parallel.state import abstract_state, create_sharded, named_shardings


@dataclasses.dataclass(frozen=True)
class ParallelPlan:
    mesh: Mesh
    rules: Rules

    @classmethod
    def from_config(cls, config: MeshConfig | None = None, devices=None) -> "ParallelPlan":
        config = config or MeshConfig()
        return cls(make_mesh(config, devices), make_rules(config.rules))

    def context(self):
        """Mesh and rules in force: jit calls traced inside see the model's sharding hints."""
        return sharding_context(self.mesh, self.rules)

    def bind(self, fn: Callable) -> Callable:
        """`fn` (a jitted step) called inside `context()`, so that it is traced with the rules and
        the mesh; other computations (host-side metrics, sampling) stay outside the mesh."""
        @functools.wraps(fn)
        def call(*args, **kwargs):
            with self.context():
                return fn(*args, **kwargs)
        return call

    def shardings(self, init_fn: Callable[[], Any]) -> Any:
        """NamedShardings for `init_fn()`'s output (a prefix tree of it), from abstract shapes."""
        return named_shardings(jax.eval_shape(init_fn), self.mesh, self.rules)

    def create(self, init_fn: Callable[[], Any]) -> Any:
        """`init_fn()` computed shard by shard on the mesh."""
        return create_sharded(init_fn, self.mesh, self.rules)

    def abstract(self, init_fn: Callable[[], Any]) -> Any:
        """`init_fn()`'s output as sharded ShapeDtypeStructs: checkpoint restore targets."""
        return abstract_state(init_fn, self.mesh, self.rules)

    def place(self, local_batch: dict, leading_axes: int = 0) -> dict:
        """This process's rows -> global arrays split over the batch's mesh axes (the rows are
        axis `leading_axes`: 1 for a stack of micro-batches)."""
        return place_batch(local_batch, self.mesh, self.rules, int(leading_axes))

    def describe(self) -> str:
        sizes = " x ".join(f"{name}={size}" for name, size in self.mesh.shape.items())
        return (f"mesh {sizes} over {self.mesh.size} {jax.devices()[0].platform} devices, "
                f"{jax.process_count()} process(es)")
