"""Meshes, logical-axis rules and sharded state: everything that knows about devices."""

from jaxformer.parallel.config import MeshConfig

__all__ = ["MeshConfig"]
