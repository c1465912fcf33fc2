"""How the devices are arranged: the mesh shape and the logical-axis rules (config only)."""

import dataclasses


@dataclasses.dataclass
class MeshConfig:
    """Mesh axis sizes. One size may be -1: it takes the devices that are left.

    `dcn_data` > 1 adds an outer data-parallel axis across slices / hosts (multi-slice TPU,
    multi-node GPU). `rules` overrides the default logical-axis -> mesh-axis rules, e.g.
    {"mlp": "tensor", "embed": "fsdp"}; a value of null leaves that logical axis replicated.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    dcn_data: int = 1
    rules: dict[str, str | None] = dataclasses.field(default_factory=dict)
