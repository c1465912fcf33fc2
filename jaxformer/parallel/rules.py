"""Logical axis names -> mesh axes.

Model code names axes ("embed", "mlp", "heads", ...) and activations ("batch", "length", ...);
these rules say which mesh axis each name is split over. Flax resolves them in order: for each
array, the first rule whose mesh axes are still free wins. That is why "batch" comes before
"embed": an activation [batch, length, embed] puts fsdp on its batch and leaves embed whole, while
a weight [embed, mlp] (no batch) is split over fsdp on embed and over tensor on mlp.

A rule may name a mesh axis the mesh lacks (`expert` and `context` exist only when larger than
1): it is skipped. A block that names a new logical axis declares it with
`jaxformer.nn.axes.declare_logical_axis` (T5's "relative_buckets" is one); the declared names
follow these rules, and `mesh.rules` may map them like any other. A name nobody declared is an
error, so a typo in `mesh.rules` never silently leaves an axis replicated.
"""

import contextlib
import difflib

import jax
from flax import linen as nn

from jaxformer.errors import ConfigError
from jaxformer.nn import axes
from jaxformer.nn.sharding import weight_rules
from jaxformer.parallel.mesh import AXES

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp", "expert")),  # outside MoE layers, the expert axis is data parallel
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("embed", "fsdp"),
    ("layers", None),  # scanned layers stay whole on each device: the scan slices them
    ("head_dim", None),
    ("length", "context"),  # sequence parallelism: ring attention (absent axis: whole)
    ("position", None),
    ("expert", "expert"),  # mixture-of-experts weights [expert, ...]
)


# The declared names as `jaxformer.nn.axes` holds them (the same dict), for code that saves and
# restores them around a declaration (tests/project/test_docs.py).
_DECLARED = axes._DECLARED


def declare_logical_axis(name: str, mesh_axes: str | tuple[str, ...] | None = None) -> None:
    """`jaxformer.nn.axes.declare_logical_axis`, with the checks `known_rules` makes run now, so
    a wrong name or mesh axis is reported where it is declared."""
    _check_declared(name, mesh_axes)
    axes.declare_logical_axis(name, mesh_axes)


def known_rules() -> Rules:
    """The default rules followed by the declared ones (in the order they were declared)."""
    return DEFAULT_RULES + tuple((name, _check_declared(name, mesh_axes))
                                 for name, mesh_axes in axes.declared_logical_axes().items())


def _check_declared(name: str, mesh_axes):
    if name in dict(DEFAULT_RULES):
        raise ValueError(f"logical axis {name!r} is already a default rule")
    return _check_mesh_axes(name, mesh_axes)


def make_rules(overrides: dict[str, str | list[str] | None] | None = None) -> Rules:
    """The default and declared rules with `mesh.rules` overrides (logical name -> mesh axis, a
    list of mesh axes, or None for replicated) replacing the entries they name."""
    rules = dict(known_rules())
    for logical, mesh_axes in (overrides or {}).items():
        if logical not in rules:
            close = difflib.get_close_matches(logical, list(rules), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"mesh.rules: unknown logical axis {logical!r}{hint}; "
                              f"known: {', '.join(rules)}")
        rules[logical] = _check_mesh_axes(logical, mesh_axes)
    return tuple(rules.items())


def _check_mesh_axes(logical: str, mesh_axes):
    if mesh_axes is None:
        return None
    names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    for name in names:
        if name not in AXES:
            raise ConfigError(f"mesh.rules.{logical}={mesh_axes!r}: {name!r} is not a mesh axis; "
                              f"use one of {', '.join(AXES)} (or null to replicate)")
    return names[0] if len(names) == 1 else names


STORAGE_ONLY_AXES = ("fsdp",)  # split a weight's storage, never its use


def weight_use_rules(rules: Rules) -> Rules:
    """`rules` for a weight at its point of use: the storage-only axes (FSDP) removed, so a
    weight is gathered whole along them and stays split along tensor and expert axes."""
    def keep(axes):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        names = tuple(n for n in names if n not in STORAGE_ONLY_AXES)
        return None if not names else names[0] if len(names) == 1 else names
    return tuple((logical, keep(axes)) for logical, axes in rules)


@contextlib.contextmanager
def sharding_context(mesh, rules: Rules):
    """Inside: `mesh` is the current mesh and logical names resolve with `rules`, so the model's
    `constrain` and `gathered` calls take effect while tracing. Wrap jit calls (tracing happens
    at the first)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), weight_rules(weight_use_rules(rules)):
        yield
