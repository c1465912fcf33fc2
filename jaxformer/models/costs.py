"""What a model costs: parameters (from abstract shapes, nothing allocated) and training FLOPs.

Counts follow HuggingFace's `num_parameters()`: tied weights once, and a padded vocabulary (see
`DecoderConfig.vocab_pad_multiple`) counted at its real size, so presets match published figures.
Each family may register its own counting (by part) and FLOPs formula; the defaults count every
parameter of the abstract model and use 6N.
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


def _size(leaf) -> int:
    return int(np.prod(leaf.shape))


def _path_keys(path) -> list[str]:
    return path_string(path).split("/")


def generic_param_counts(config) -> ParamCounts:
    """Every parameter of the abstract model, grouped by its top-level module."""
    groups: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(param_shapes(config)):
        top = _path_keys(path)[0]
        groups[top] = groups.get(top, 0) + _size(leaf)
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


# --- the decoder LM ---


def decoder_param_counts(config) -> ParamCounts:
    """Counted from the shapes of a one-layer copy of the model, its layer counted `num_layers`
    times. Tracing the full stack costs time quadratic in the number of parameters (JAX walks the
    trace to build an error message each time flax reads an RNG counter), several seconds for
    GPT-2 xl; the layers are identical, so one suffices. Vocabulary padding is not counted."""
    state = param_shapes(config.replace(num_layers=1))
    moe = config.moe_num_experts > 0
    groups = dict.fromkeys(("token_embedding", "positions", "lm_head", "attention")
                           + (("router", "experts") if moe else ("feed_forward",)) + ("norms",), 0)
    per_layer = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        keys = _path_keys(path)
        if keys[0] == "layers":
            # ["layers", 0, "attention", ...] (a list) or ["layers", "attention", ...] (stacked)
            sublayer = next(k for k in keys[1:] if not k.isdigit())
            group = sublayer if sublayer in ("attention", "feed_forward") else "norms"
            if group == "feed_forward" and moe:
                group = "router" if "router" in keys else "experts"
            per_layer += _size(leaf)
            size = _size(leaf) * config.num_layers
        else:
            group = {"embed": "token_embedding", "position_embedding": "positions",
                     "lm_head": "lm_head"}.get(keys[0], "norms")
            size = _size(leaf)
            if group in ("token_embedding", "lm_head"):  # [padded vocab, d] -> [vocab, d]
                size = size // config.padded_vocab_size * config.vocab_size
        groups[group] += size
    # A token uses k of the E experts of each layer.
    active = (sum(groups.values()) - groups["experts"] * (config.moe_num_experts - config.moe_top_k)
              // config.moe_num_experts) if moe else None
    return ParamCounts(groups, num_layers=config.num_layers, per_layer=per_layer, active=active)


def decoder_flops_parts(config, seq_len: int | None = None) -> dict[str, int]:
    """Training FLOPs per token in PaLM's two parts (appendix B): 6N for the weight matmuls of the
    forward (2N) and backward (4N) passes, N the parameters less position tables; and
    12 * layers * heads * head_dim * T for attention scores and weighted values at sequence
    length T (default: the context). The attention part counts the full (unmasked) score matrix.
    With experts, N counts the parameters a token uses (its k experts, the router, the rest)."""
    seq_len = seq_len or config.max_seq_len
    counts = param_counts(config)
    if counts.active is not None:
        weights = {f"6N, N = {counts.active_non_positional:,} active (top-{config.moe_top_k} of "
                   f"{config.moe_num_experts} experts)": 6 * counts.active_non_positional}
    else:
        weights = {DENSE: 6 * counts.non_positional}
    return {**weights,
            "12 x layers x d_model x T (attention)":
                12 * config.num_layers * config.num_heads * config.head_size * seq_len}


def ffn_params(config) -> int:
    """Parameters in the feed-forward sublayers of all layers (kernels and biases; with experts,
    all experts and the routers)."""
    groups = param_counts(config).groups
    return groups.get("feed_forward", 0) + groups.get("experts", 0) + groups.get("router", 0)
