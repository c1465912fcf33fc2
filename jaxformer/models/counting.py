"""What a model costs: parameters (from abstract shapes, nothing allocated) and training FLOPs.

Counts follow HuggingFace's `num_parameters()`: tied weights once, and a padded vocabulary (see
`DecoderConfig.vocab_pad_multiple`) counted at its real size, so presets match published figures.
Each family may register its own counting (by part) and FLOPs formula (its package's `costs.py`,
built from the helpers here); the defaults count every parameter of the abstract model and use 6N.
"""

import dataclasses

import jax
import numpy as np
from flax import nnx

from jaxformer.models.registry import abstract_model, family_of
from jaxformer.nn.params import path_string


def param_shapes(config) -> nnx.State:
    """The model's parameter state as `jax.ShapeDtypeStruct`s: no weights are allocated."""
    return nnx.state(abstract_model(config), nnx.Param)


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """Parameters by part, in display order (e.g. token_embedding, positions, lm_head, attention,
    feed_forward, norms for a decoder); each part is also an attribute (`counts.attention`).
    `positional` names the parts left out of N in the FLOPs formula (position tables)."""

    groups: dict[str, int]
    num_layers: int = 0
    per_layer: int = 0  # one transformer block
    positional: tuple[str, ...] = ("positions",)
    active: int | None = None  # mixture of experts: parameters one token uses (None: all)

    def __getattr__(self, name: str) -> int:
        groups = self.__dict__.get("groups", {})
        if name in groups:
            return groups[name]
        raise AttributeError(name)

    @property
    def total(self) -> int:
        return sum(self.groups.values())

    @property
    def non_positional(self) -> int:
        """N in the FLOPs formula: everything but position tables."""
        return self.total - sum(self.groups.get(name, 0) for name in self.positional)

    @property
    def active_non_positional(self) -> int:
        """N in the FLOPs formula of a sparse model: the parameters a token uses, less position
        tables (= non_positional for a dense model)."""
        active = self.total if self.active is None else self.active
        return active - sum(self.groups.get(name, 0) for name in self.positional)

    @property
    def embedding(self) -> int:
        """Token and position tables plus an untied LM head: parameters used as lookups or the
        final projection rather than in the layers."""
        return sum(self.groups.get(name, 0) for name in ("token_embedding", "positions", "lm_head"))


def leaf_size(leaf) -> int:
    """Entries of a parameter (a `jax.ShapeDtypeStruct` or an array)."""
    return int(np.prod(leaf.shape))


def path_keys(path) -> list[str]:
    """A pytree path as its keys, e.g. ["layers", "0", "attention", "query", "kernel"]."""
    return path_string(path).split("/")


def generic_param_counts(config) -> ParamCounts:
    """Every parameter of the abstract model, grouped by its top-level module."""
    groups: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(param_shapes(config)):
        top = path_keys(path)[0]
        groups[top] = groups.get(top, 0) + leaf_size(leaf)
    return ParamCounts(groups)


def param_counts(config) -> ParamCounts:
    family = family_of(config)
    return (family.param_counts or generic_param_counts)(config)


def count_params(config, *, include_positions: bool = True) -> int:
    """Number of parameters, tied weights counted once (as HF's `num_parameters()` does)."""
    counts = param_counts(config)
    return counts.total if include_positions else counts.non_positional


DENSE = "6N (weight matmuls, forward + backward)"


def flops_parts(config, seq_len: int | None = None) -> dict[str, int]:
    """Training FLOPs per token by part: the family's formula, or 6N alone (PaLM appendix B
    without the attention term)."""
    family = family_of(config)
    if family.flops_parts is not None:
        return family.flops_parts(config, seq_len)
    return {DENSE: 6 * count_params(config, include_positions=False)}


def flops_per_token(config, seq_len: int | None = None) -> float:
    """Training FLOPs per token (all parts of `flops_parts`)."""
    return float(sum(flops_parts(config, seq_len).values()))
