"""Sharding hints for activations, by logical axis name only.

Model code calls `constrain(x, ("batch", "length", "embed"))` at block boundaries. Whether that
means anything is decided outside the model: inside `jax.set_mesh(mesh)` and
`nnx.logical_axis_rules(rules)` (set up by `jaxformer.parallel`) the names become mesh axes and the
activation is pinned there; with no rules or no mesh (tests, a single device) it is a no-op.
"""

from collections.abc import Mapping, Sequence

import jax
from flax import linen as nn
from jax.sharding import AxisType, PartitionSpec

MeshAxes = str | tuple[str, ...] | None


def fit_to_shape(spec: Sequence[MeshAxes], shape: Sequence[int],
                 axis_sizes: Mapping[str, int]) -> PartitionSpec:
    """Drop mesh axes that do not divide their dimension, keeping the longest prefix that does.

    A decode batch of 1 cannot be split over 8 devices, nor 2 key/value heads over 4 tensor
    shards; such a dimension is replicated (or split over fewer axes) instead of failing. Mesh
    axes the mesh does not have (an optional `expert` or `context` axis) are skipped.
    """
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = present((axes,) if isinstance(axes, str) else tuple(axes or ()), axis_sizes)
        while names:
            size = 1
            for name in names:
                size *= axis_sizes[name]
            if dim % size == 0:
                break
            names = names[:-1]
        fitted.append(None if not names else names[0] if len(names) == 1 else names)
    return PartitionSpec(*fitted)


def present(names: tuple[str, ...], axis_sizes: Mapping[str, int]) -> tuple[str, ...]:
    """The mesh axes among `names` that the mesh has."""
    return tuple(name for name in names if name in axis_sizes)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int],
                    rules, axis_sizes: Mapping[str, int]) -> PartitionSpec:
    """Logical names -> a PartitionSpec over the mesh axes, resolved with Flax's priority rules
    (the first rule whose mesh axes are still free wins, so "embed" stays unsharded on an
    activation whose "batch" already took the fsdp axis) and fitted to `shape`."""
    mesh_axes = nn.logical_to_mesh_axes(tuple(logical_axes), rules)
    return fit_to_shape(tuple(mesh_axes), shape, axis_sizes)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Pin activation `x` to the sharding its logical axes map to; a no-op without rules and an
    Auto-axes mesh in context (Explicit meshes carry shardings in the types instead)."""
    if len(logical_axes) != x.ndim:
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {x.shape}")
    rules = nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty or any(t != AxisType.Auto for t in mesh.axis_types):
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, x.shape, rules, mesh.shape))
