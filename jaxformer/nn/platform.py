"""Which hardware the program being traced is compiled for.

A program is compiled for the devices of its mesh, which need not be the host's: on a CPU host,
libtpu's compile-only devices (`jax.experimental.topologies`) give a mesh of TPU chips, and the
program traced under it must choose TPU kernels. So hardware-dependent choices (the attention
kernel, Pallas interpret mode, the CPU's blocked causal path) read the mesh in context
(`jax.set_mesh`), and fall back to the host's default backend only when no mesh is set.

`compute_as("gpu")` (or "tpu") traces as if for that hardware on whatever devices run the
program: every choice that follows the platform (the kernel `auto` picks, the `xla` path's
`jax.nn.dot_product_attention` with its built-in causal mask where a CPU would run the blocked
causal path, the remat policy `auto`) is the accelerator's, while the Pallas kernels run in
interpret mode and the cuDNN call goes to XLA's implementation of the same
`jax.nn.dot_product_attention` arguments. It is how a CPU checks the math an accelerator runs.
"""

import contextlib
import contextvars

import jax

PLATFORMS = ("cpu", "gpu", "tpu")
_as: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxformer_compute_as", default=None)


def device_platform() -> str:
    """"tpu", "gpu" or "cpu": the platform of the mesh in context, else `jax.default_backend()`;
    the hardware that will run the program (what decides Pallas interpret mode)."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        device = getattr(mesh, "abstract_device", None)
        if device is not None and device.platform:
            return _canonical(device.platform)
    return _canonical(jax.default_backend())


def compute_platform() -> str:
    """The platform whose choices the traced program makes: `compute_as`'s, else the devices'."""
    return _as.get() or device_platform()


@contextlib.contextmanager
def compute_as(platform: str):
    """Trace the programs built inside as if for `platform` ("cpu", "gpu" or "tpu"); see the
    module docstring. Read at trace time: a function jitted inside keeps the choice it was traced
    with."""
    if platform not in PLATFORMS:
        raise ValueError(f"compute_as({platform!r}): use one of {PLATFORMS}")
    token = _as.set(platform)
    try:
        yield
    finally:
        _as.reset(token)


def _canonical(platform: str) -> str:
    # ROCm and CUDA devices are both "gpu" to the kernel choice.
    return "gpu" if platform in ("cuda", "rocm") else platform
