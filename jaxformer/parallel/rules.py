"""Logical axis names -> mesh axes.

Model code names axes ("embed", "mlp", "heads", ...) and activations ("batch", "length", ...);
these rules say which mesh axis each name is split over. Flax resolves them in order: for each
array, the first rule whose mesh axes are still free wins. That is why "batch" comes before
"embed": an activation [batch, length, embed] puts fsdp on its batch and leaves embed whole, while
a weight [embed, mlp] (no batch) is split over fsdp on embed and over tensor on mlp.
"""

import contextlib
import difflib

import jax
from flax import linen as nn

from jaxformer.errors import ConfigError
from jaxformer.parallel.mesh import AXES

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("embed", "fsdp"),
    ("layers", None),  # scanned layers stay whole on each device: the scan slices them
    ("head_dim", None),
    ("length", None),
    ("position", None),
)


def make_rules(overrides: dict[str, str | list[str] | None] | None = None) -> Rules:
    """The default rules with `mesh.rules` overrides (logical name -> mesh axis, a list of mesh
    axes, or None for replicated) replacing the entries they name; new names are appended."""
    rules = dict(DEFAULT_RULES)
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


@contextlib.contextmanager
def sharding_context(mesh, rules: Rules):
    """Inside: `mesh` is the current mesh and logical names resolve with `rules`, so the model's
    `constrain` calls take effect while tracing. Wrap jit calls (tracing happens at the first)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
