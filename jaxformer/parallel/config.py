"""How the devices are arranged: the mesh shape and the logical-axis rules (config only)."""

import dataclasses

from jaxformer.errors import ConfigError


@dataclasses.dataclass
class MeshConfig:
    """Mesh axis sizes. One size may be -1: it takes the devices that are left.

    `dcn_data` > 1 adds an outer data-parallel axis across slices / hosts (multi-slice TPU,
    multi-node GPU). `expert` > 1 splits the experts of mixture-of-experts layers (and the batch,
    as data parallelism elsewhere); `context` > 1 splits the sequence (ring attention). Those two
    axes exist in the mesh only when larger than 1. `rules` overrides the default logical-axis -> mesh-axis rules, e.g.
    {"mlp": "tensor", "embed": "fsdp"}; a value of null leaves that logical axis replicated.
    `num_devices` > 0 builds the mesh from only the first that many devices (one process only):
    a small model on a CPU host whose cores are split into fake devices (tests, debugging) runs
    faster on one device than data parallel across all of them.
    `init_timeout_s`: how long a multi-process run may take to start (all processes reporting to
    the coordinator, then JAX connecting them) before every process ends with one line naming the
    cause; null: $JAXFORMER_INIT_TIMEOUT_S, else 120 (jaxformer/parallel/distributed.py).
    """

    num_devices: int = -1
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1
    context: int = 1
    dcn_data: int = 1
    rules: dict[str, str | None] = dataclasses.field(default_factory=dict)
    init_timeout_s: float | None = None

    def __post_init__(self):
        if self.init_timeout_s is not None and not self.init_timeout_s > 0:
            raise ConfigError(f"mesh.init_timeout_s must be positive (seconds), got "
                              f"{self.init_timeout_s}")
