"""TPU slices by their Cloud TPU names, as compile-only devices on any host.

libtpu (installed by `pip install "jax[tpu]"`) describes a TPU slice without owning one:
`jax.experimental.topologies.get_topology_desc` returns devices that programs can be compiled for
but never run on. A CPU host can then compile the real train step for a v5e-256 and read what it
needs per chip before anyone rents the slice.

Names follow Cloud TPU's accelerator types: v5e-N and v6e-N count chips; v4-N and v5p-N count
TensorCores (two per chip), so v5p-128 is 64 chips. The libtpu form ("v5e:16x16", "v5:4x4x4")
is accepted too.
"""

import dataclasses
import importlib.util
import math
import os
import re

from jax.experimental import topologies

from jaxformer.errors import UserError

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One chip's published figures (Cloud TPU documentation; shared/docs/REFERENCE_NUMBERS.md).
    `ici_bytes_per_s` is the bidirectional inter-chip bandwidth per chip; `dcn_bytes_per_s` the
    data-centre network bandwidth per chip between slices (a host's 100 Gb/s shared by its 4
    chips: an assumption for the estimate, not a published per-chip figure)."""

    generation: str  # v4 | v5e | v5p | v6e
    libtpu_name: str  # the topology prefix libtpu knows
    chip_config: str
    peak_flops: float  # bf16 dense, per chip
    hbm_bytes: int
    hbm_bytes_per_s: float
    ici_bytes_per_s: float
    cores_per_chip: int  # Cloud TPU's accelerator-type count per chip
    dims: int  # 2-D torus (v5e, v6e) or 3-D (v4, v5p)
    dcn_bytes_per_s: float = 100e9 / 8 / 4


CHIPS = {
    "v4": Chip("v4", "v4", "megacore_dense", 275e12, 32 * GiB, 1200e9, 600e9, 2, 3),
    "v5e": Chip("v5e", "v5e", "default", 197e12, 16 * GiB, 819e9, 400e9, 1, 2),
    "v5p": Chip("v5p", "v5", "megacore", 459e12, 95 * GiB, 2765e9, 1200e9, 2, 3),
    "v6e": Chip("v6e", "v6e", "default", 918e12, 32 * GiB, 1638e9, 800e9, 1, 2),
}
_LIBTPU_TO_GENERATION = {chip.libtpu_name: name for name, chip in CHIPS.items()}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as the user wrote it
    chip: Chip
    shape: tuple[int, ...]  # chips along each torus axis
    slices: int = 1

    @property
    def chips_per_slice(self) -> int:
        return math.prod(self.shape)

    @property
    def chips(self) -> int:
        return self.chips_per_slice * self.slices

    @property
    def libtpu_name(self) -> str:
        return f"{self.chip.libtpu_name}:{'x'.join(map(str, self.shape))}"

    def describe(self) -> str:
        slices = f" x {self.slices} slices over DCN" if self.slices > 1 else ""
        return f"{self.name} ({self.chips_per_slice} {self.chip.generation} chips, {self.libtpu_name}){slices}"


def _grid(chips: int, dims: int) -> tuple[int, ...]:
    """Cloud TPU's slice shapes: powers of two, each doubling on the shortest axis (the last of
    equals), so v5e-8 is 2x4, v5e-32 4x8, v4-8's 4 chips 2x2x1 and v5p-128's 64 chips 4x4x4."""
    if chips < 1 or chips & (chips - 1):
        raise UserError(f"{chips} chips: TPU slices have a power-of-two number of chips")
    shape = [1] * dims
    if dims == 3:  # 3-D slices start from a 2x2x1 block of one host
        if chips < 4:
            raise UserError(f"{chips} chips: v4 and v5p slices start at 4 chips (v5p-8, v4-8)")
        shape, chips = [2, 2, 1], chips // 4
    while chips > 1:
        shortest = min(shape)
        axis = max(a for a in range(dims) if shape[a] == shortest)
        shape[axis] *= 2
        chips //= 2
    return tuple(shape)


def parse_topology(name: str, slices: int = 1) -> Topology:
    """"v5e-256", "v5p-128", "v6e-8", "v4-8" (Cloud TPU names) or "v5e:16x16", "v5:4x4x4"."""
    if slices < 1:
        raise UserError(f"--slices {slices}: use 1 or more")
    text = name.strip().lower()
    match = re.fullmatch(r"(v4|v5e|v5p|v6e|v5litepod)-(\d+)", text)
    if match:
        generation = "v5e" if match[1] == "v5litepod" else match[1]
        chip = CHIPS[generation]
        count = int(match[2])
        if count % chip.cores_per_chip:
            raise UserError(f"{name}: {generation} slices are named by TensorCores, two per chip "
                            f"(e.g. {generation}-8 is 4 chips)")
        return Topology(name, chip, _grid(count // chip.cores_per_chip, chip.dims), slices)
    match = re.fullmatch(r"(v4|v5e|v5|v6e):(\d+(?:x\d+)*)", text)
    if match:
        chip = CHIPS[_LIBTPU_TO_GENERATION[match[1]]]
        shape = tuple(int(n) for n in match[2].split("x"))
        if len(shape) != chip.dims:
            raise UserError(f"{name}: a {chip.generation} slice has {chip.dims} torus axes")
        return Topology(name, chip, shape, slices)
    raise UserError(f"unknown TPU topology {name!r}: use a Cloud TPU name such as v5e-8, v5e-256, "
                    f"v5p-128, v6e-8, v4-8 (or libtpu's v5e:2x2, v5:4x4x4)")


def _host_bounds(topology: Topology) -> tuple[int, int, int]:
    """Chips per host: up to 2x2 on a multi-host slice; a single-host v5e-8/v6e-8 has 8."""
    shape = (*topology.shape, 1)[:3]
    if topology.chip.dims == 2 and topology.chips_per_slice <= 8:
        return (shape[0], shape[1], 1)
    return tuple(min(2, n) for n in shape[:2]) + (1,)


def compile_only_devices(topology: Topology) -> list:
    """The slice's devices, compile-only: programs built on them cannot run here."""
    # Without a TPU to ask, libtpu must not query the metadata server; several processes (test
    # workers) may load it at once.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if importlib.util.find_spec("libtpu") is None:
        raise UserError('compiling for TPUs needs libtpu: pip install "jax[tpu]" (the same version '
                        'as jax)')
    try:
        desc = topologies.get_topology_desc(
            platform="tpu", topology_name=topology.libtpu_name,
            chip_config_name=topology.chip.chip_config,
            chips_per_host_bounds=_host_bounds(topology), num_slices=topology.slices)
    except Exception as e:  # noqa: BLE001 - a shape libtpu refuses: its own words, on one line
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"libtpu cannot describe {topology.describe()}: {detail}") from None
    return list(desc.devices)
