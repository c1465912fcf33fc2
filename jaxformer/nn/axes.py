"""Logical axis names beyond the standard ones, declared by the block that names them.

Blocks name the axes of parameters and activations logically ("embed", "heads", ...);
`jaxformer.parallel.rules` maps each name to mesh axes. The standard names have rules there. A
block that names another axis declares it here, with the mesh axes it is split over by default
(None: replicated); `mesh.rules` may then map it like any other name, and a name nobody declared
stays an error there, so a typo in `mesh.rules` never silently leaves an axis replicated.
"""

from jaxformer.nn.sharding import MeshAxes

_DECLARED: dict[str, MeshAxes] = {}


def declare_logical_axis(name: str, mesh_axes: MeshAxes = None) -> None:
    """Make `name` a known logical axis, split over `mesh_axes` by default (None: replicated).
    The rules check the mesh axes' names when they are built."""
    _DECLARED[name] = mesh_axes


def declared_logical_axes() -> dict[str, MeshAxes]:
    """{name: default mesh axes} of the declared names, in the order they were declared."""
    return dict(_DECLARED)
