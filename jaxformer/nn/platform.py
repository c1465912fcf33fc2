"""Which hardware the program being traced is compiled for.

A program is compiled for the devices of its mesh, which need not be the host's: on a CPU host,
libtpu's compile-only devices (`jax.experimental.topologies`) give a mesh of TPU chips, and the
program traced under it must choose TPU kernels. So hardware-dependent choices (the attention
kernel, Pallas interpret mode, the CPU's blocked causal path) read the mesh in context
(`jax.set_mesh`), and fall back to the host's default backend only when no mesh is set.
"""

import jax


def compute_platform() -> str:
    """"tpu", "gpu" or "cpu": the platform of the mesh in context, else `jax.default_backend()`."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        device = getattr(mesh, "abstract_device", None)
        if device is not None and device.platform:
            return _canonical(device.platform)
    return _canonical(jax.default_backend())


def _canonical(platform: str) -> str:
    # ROCm and CUDA devices are both "gpu" to the kernel choice.
    return "gpu" if platform in ("cuda", "rocm") else platform
