"""Sharding hints for activations, by logical axis name only.

Model code calls `constrain(x, ("batch", "length", "embed"))` at block boundaries. Whether that
means anything is decided outside the model: inside `jax.set_mesh(mesh)` and
`nnx.logical_axis_rules(rules)` (set up by `jaxformer.parallel`) the names become mesh axes and the
activation is pinned there; with no rules or no mesh (tests, a single device) it is a no-op.
"""

import contextlib
import contextvars
import functools
from collections.abc import Mapping, Sequence

import jax
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name
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


# --- weights at their point of use ---

GATHERED_WEIGHT = "gathered_weight"  # the name remat policies know a used weight by
_WEIGHT_RULES: contextvars.ContextVar = contextvars.ContextVar("weight_rules", default=None)


@contextlib.contextmanager
def weight_rules(rules):
    """Inside: `gathered` lays weights out with `rules` (logical name -> mesh axes for a weight
    being used). The parallel layer sets them: its rules less the axes that only store weights
    (FSDP), so each weight is gathered where it is used, once."""
    token = _WEIGHT_RULES.set(rules)
    try:
        yield
    finally:
        _WEIGHT_RULES.reset(token)


def gathered(w: jax.Array, logical_axes: Sequence[str | None], *, table: bool = False) -> jax.Array:
    """Weight `w` (named `logical_axes`) as the computation that uses it needs it: whole along
    the axes that only shard its storage (FSDP), still split along tensor-parallel ones.

    One constraint per use site gives XLA one gather of the weight for the products it feeds;
    without it GSPMD may gather a weight again for every product (seen: five gathers of each
    attention projection in a backward pass, and the token ids gathered across the batch for the
    embedding's gradient). The gradient goes straight back to the stored layout, so each chip
    sums only its own shard of it across the batch (a reduce-scatter) and never holds the whole
    gradient. An embedding `table`'s gradient is a scatter of the batch's rows: it is formed whole
    and then summed to the stored layout (forming it in that layout would gather every token id
    across the batch). A no-op without weight rules or an Auto mesh."""
    use_rules, rules = _WEIGHT_RULES.get(), nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if use_rules and not mesh.empty and all(t == AxisType.Auto for t in mesh.axis_types):
        use = logical_to_spec(logical_axes, w.shape, use_rules, mesh.shape)
        store = logical_to_spec(logical_axes, w.shape, rules, mesh.shape)
        w = _gather(w, use, store, table) if use != store else w
    # The `keep_weights` remat policy (models/layers.py) saves exactly these for the backward pass.
    return checkpoint_name(w, GATHERED_WEIGHT)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _gather(w, use: PartitionSpec, store: PartitionSpec, table: bool):
    return jax.lax.with_sharding_constraint(w, use)


def _gather_fwd(w, use, store, table):
    return _gather(w, use, store, table), None


def _gather_bwd(use, store, table, _, grad):
    if table:
        grad = jax.lax.with_sharding_constraint(grad, use)
    return (jax.lax.with_sharding_constraint(grad, store),)


_gather.defvjp(_gather_fwd, _gather_bwd)
