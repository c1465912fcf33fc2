"""Sharded creation of a train state: parameters and optimizer state are born sharded.

The recipe: trace the init function abstractly (`jax.eval_shape`: shapes and dtypes, nothing
allocated), give every leaf a `NamedSharding` from the logical axis names on its parameter, then
run the init function under `jax.jit(..., out_shardings=...)`, so each device computes and keeps
only its own shard. The same shardings, on `jax.ShapeDtypeStruct`s, are the targets that restore
a checkpoint onto this mesh, whatever mesh saved it.

Which sharding a leaf gets:
- an `nnx.Variable` with `out_sharding` metadata (parameters, and optax moments built from an
  `nnx.State`, which keep the metadata): its logical names through the rules;
- a plain array whose path ends like a parameter's path and has its shape (optax moments of a
  pure-dict params tree: `opt_state[0].mu['layers'][0]['attention']...`): that parameter's spec;
- anything else (step counters, scalars, RNG keys): replicated.
A train state kept as plain arrays (`nnx.to_pure_dict`) has no metadata: pass the model's
abstract `nnx.State` as `reference` and its parameters' paths and names are used.
"""

from collections.abc import Callable
from typing import Any

import jax
from flax import linen as nn
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer.errors import ConfigError
from jaxformer.nn.params import path_string
from jaxformer.nn.sharding import logical_to_spec, present
from jaxformer.parallel.rules import Rules


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _logical_axes(leaf) -> tuple | None:
    return leaf.get_metadata().get("out_sharding") if _is_variable(leaf) else None


def _keys(path) -> tuple[str, ...]:
    return tuple(jax.tree_util.keystr((k,)) for k in path)


def parameter_spec(logical_axes, shape, rules: Rules, axis_sizes: dict[str, int],
                   path: str) -> PartitionSpec:
    """A parameter's spec: its logical names through the rules, every mesh axis kept. A mesh axis
    that does not divide its dimension is a ConfigError naming the parameter, the dimension and
    the axis (activations may be fitted to odd shapes; parameters are never silently replicated)."""
    mesh_axes = tuple(nn.logical_to_mesh_axes(tuple(logical_axes), rules))
    for dim, (logical, axes) in enumerate(zip(logical_axes, mesh_axes)):
        names = present((axes,) if isinstance(axes, str) else tuple(axes or ()), axis_sizes)
        size = 1
        for name in names:
            size *= axis_sizes[name]
        if shape[dim] % size:
            raise ConfigError(
                f"parameter {path} has {shape[dim]} entries on its {logical!r} axis (dimension "
                f"{dim} of {tuple(shape)}), which mesh axis {'x'.join(names)} of size {size} does "
                f"not divide: change the mesh, or replicate it with mesh.rules.{logical}=null")
    return logical_to_spec(logical_axes, shape, rules, axis_sizes)


def partition_specs(abstract_tree: Any, mesh: Mesh, rules: Rules, reference: Any = None) -> Any:
    """A PartitionSpec for every leaf of `abstract_tree` (Variables count as leaves)."""
    leaves = jax.tree_util.tree_leaves_with_path(abstract_tree, is_leaf=_is_variable)
    axis_sizes = dict(mesh.shape)

    # Every tail of every named parameter's path -> (shape, spec), for the plain-array lookups.
    by_tail: dict[tuple[str, ...], tuple[tuple[int, ...], PartitionSpec]] = {}
    named = {}
    ref_leaves = jax.tree_util.tree_leaves_with_path(reference, is_leaf=_is_variable) if reference else []
    for is_ref, (path, leaf) in [(True, x) for x in ref_leaves] + [(False, x) for x in leaves]:
        axes = _logical_axes(leaf)
        if axes:
            keys = _keys(path)
            spec = parameter_spec(axes, leaf.shape, rules, axis_sizes, path_string(path))
            if not is_ref:
                named[keys] = spec
            # Tails of at least two keys: "['kernel']" alone would match every kernel.
            for start in range(len(keys) - 1):
                by_tail.setdefault(keys[start:], (tuple(leaf.shape), spec))

    def spec_for(path, leaf):
        keys = _keys(path)
        if keys in named:
            return named[keys]
        for start in range(len(keys) - 1):
            match = by_tail.get(keys[start:])
            if match is not None and match[0] == tuple(getattr(leaf, "shape", ())):
                return match[1]
        return PartitionSpec()

    specs = [spec_for(path, leaf) for path, leaf in leaves]
    return jax.tree_util.tree_unflatten(jax.tree.structure(abstract_tree, is_leaf=_is_variable), specs)


def named_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules, reference: Any = None) -> Any:
    """`partition_specs` as NamedShardings on `mesh` (a pytree prefix of `abstract_tree`)."""
    specs = partition_specs(abstract_tree, mesh, rules, reference)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def abstract_state(init_fn: Callable[[], Any], mesh: Mesh, rules: Rules, reference: Any = None) -> Any:
    """`init_fn()`'s output as ShapeDtypeStructs carrying their shardings on `mesh`: nothing is
    allocated. These are the restore targets for orbax, and the inputs for `.lower()`."""
    abstract = jax.eval_shape(init_fn)
    shardings = named_shardings(abstract, mesh, rules, reference)
    return with_shardings(abstract, shardings)


def with_shardings(abstract_tree: Any, shardings: Any) -> Any:
    """Attach `shardings` (a prefix tree of NamedShardings) to the ShapeDtypeStructs of a tree."""
    def attach(sharding, subtree):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), subtree)

    return jax.tree.map(attach, shardings, abstract_tree,
                        is_leaf=lambda x: isinstance(x, NamedSharding))


def create_sharded(init_fn: Callable[[], Any], mesh: Mesh, rules: Rules, reference: Any = None) -> Any:
    """Run `init_fn()` (a pure function returning the train state: arrays, `nnx.State`, optax
    states) so that every leaf is created directly in its shard on `mesh`."""
    shardings = named_shardings(jax.eval_shape(init_fn), mesh, rules, reference)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        return jax.jit(init_fn, out_shardings=shardings)()


def state_bytes_per_device(tree: Any) -> dict:
    """{device: bytes} of the shards each device holds (read from the arrays' addressable shards)."""
    totals: dict = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return totals
