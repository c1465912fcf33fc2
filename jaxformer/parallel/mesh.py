"""The device mesh: axes `data`, `fsdp`, `tensor` (and `expert`, `context`) sized from a `MeshConfig`.

- data: replicas of the model, each on a slice of the batch.
- fsdp: the batch is split further, and so are the parameters and optimizer state (gathered
  layer by layer when used): ZeRO-3 / fully sharded data parallel.
- expert: the experts of mixture-of-experts layers are split; tokens travel to their experts by
  all-to-all (nn/moe_parallel.py). Elsewhere it splits the batch like `data`.
- context: the sequence is split; attention runs as ring attention (nn/ring_attention.py).
- tensor: the heads and the feed-forward width are split (Megatron-style tensor parallelism).

`expert` and `context` are optional: the mesh has them only when their size is above 1, so a
mesh without them keeps the three-axis shape (rules naming an absent axis simply skip it).

`dcn_data` > 1 puts an outer data-parallel factor across TPU slices (multi-slice) or hosts
(multi-node GPU), where the links are slow: only gradients cross them. It is folded into the
`data` axis, so the logical-axis rules do not change with it.

The axes are Auto (GSPMD): the model only hints shardings by logical name, and XLA propagates
them (see the Explicit-axes trap in docs/JAX_NOTES.md).
"""

import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from jaxformer.errors import ConfigError
from jaxformer.parallel.config import MeshConfig

AXES = ("data", "fsdp", "expert", "context", "tensor")  # every axis name the rules may use
OPTIONAL_AXES = ("expert", "context")  # in the mesh only when larger than 1


def resolve_axis_sizes(config: MeshConfig, num_devices: int) -> dict[str, int]:
    """{"data", "fsdp", "tensor"} sizes (plus "expert" and "context" when above 1) whose product
    (times dcn_data) is `num_devices`; the data size includes the dcn_data factor. A size of -1
    takes the devices left over."""
    sizes = {"data": config.data, "fsdp": config.fsdp, "tensor": config.tensor,
             "expert": config.expert, "context": config.context}
    if config.dcn_data < 1:
        raise ConfigError(f"mesh.dcn_data={config.dcn_data} must be >= 1")
    for name, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f"mesh.{name}={size}: use a positive size, or -1 for the devices left")
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh.{' and mesh.'.join(free)} are all -1: at most one axis may take "
                          f"the devices left; give the others a size")
    if num_devices % config.dcn_data:
        raise ConfigError(f"mesh.dcn_data={config.dcn_data} does not divide the {num_devices} devices")
    per_granule = num_devices // config.dcn_data
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if per_granule % fixed:
            raise ConfigError(f"mesh {_describe(sizes)} cannot fill {per_granule} devices per "
                              f"{'slice/host' if config.dcn_data > 1 else 'mesh'}: {fixed} does not "
                              f"divide {per_granule}; choose sizes whose product divides it")
        sizes[free[0]] = per_granule // fixed
    elif fixed != per_granule:
        raise ConfigError(f"mesh {_describe(sizes)} needs {fixed * config.dcn_data} devices but "
                          f"{num_devices} are present; set one axis to -1 to take what is left")
    sizes["data"] *= config.dcn_data
    return {name: size for name, size in sizes.items()
            if name not in OPTIONAL_AXES or size > 1}


def _first_devices(num_devices: int, devices: list) -> list:
    if num_devices == -1 or num_devices == len(devices):
        return devices
    if num_devices < 1 or num_devices > len(devices):
        raise ConfigError(f"mesh.num_devices={num_devices}: {len(devices)} devices are present; "
                          f"use a count from 1 to {len(devices)}, or -1 for all of them")
    if jax.process_count() > 1:
        raise ConfigError(f"mesh.num_devices={num_devices} with {jax.process_count()} processes: "
                          f"every process must take part in the mesh; leave mesh.num_devices at -1")
    return devices[:num_devices]


def _describe(sizes: dict[str, int]) -> str:
    return " x ".join(f"{name}={size}" for name, size in sizes.items()
                      if name not in OPTIONAL_AXES or size != 1)


def make_mesh(config: MeshConfig | None = None, devices=None) -> Mesh:
    """A mesh over `devices` (default: every device of every process, or the first
    `config.num_devices` of them) with Auto axis types."""
    config = config or MeshConfig()
    devices = list(jax.devices() if devices is None else devices)
    devices = _first_devices(config.num_devices, devices)
    sizes = resolve_axis_sizes(config, len(devices))
    names = tuple(name for name in AXES if name in sizes)
    shape = [sizes[name] for name in names]
    if config.dcn_data > 1:
        device_array = _hybrid_device_array(config, shape, devices)
    else:
        device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    return Mesh(device_array, names, axis_types=(AxisType.Auto,) * len(names))


def _hybrid_device_array(config: MeshConfig, shape: list[int], devices) -> np.ndarray:
    """Slices (multi-slice TPU) or processes (multi-node GPU) laid out along the outer data factor,
    so that only the data axis crosses the slow network."""
    inner = [shape[0] // config.dcn_data, *shape[1:]]
    outer = [config.dcn_data] + [1] * (len(shape) - 1)
    slices = {getattr(d, "slice_index", None) for d in devices}
    processes = {d.process_index for d in devices}
    if len(slices) > 1:
        granules, by_process = len(slices), False
    elif len(processes) > 1:
        granules, by_process = len(processes), True
    else:
        # One slice, one process: nothing slow to keep off, so the factor is plain data parallelism.
        return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    if granules != config.dcn_data:
        kind = "processes" if by_process else "TPU slices"
        raise ConfigError(f"mesh.dcn_data={config.dcn_data} but the devices span {granules} {kind}: "
                          f"set mesh.dcn_data={granules}")
    return mesh_utils.create_hybrid_device_mesh(inner, outer, devices, process_is_granule=by_process,
                                                allow_split_physical_axes=True)
