"""What a decoder LM costs: parameters by part (HF's count) and training FLOPs per token."""

import jax

from jaxformer.models.counting import (DENSE, ParamCounts, leaf_size, param_counts, param_shapes,
                                       path_keys)
from jaxformer.models.decoder.config import DecoderConfig


def decoder_param_counts(config: DecoderConfig) -> ParamCounts:
    """Counted from the shapes of a one-layer copy of the model, its layer counted `num_layers`
    times. Tracing the full stack costs time quadratic in the number of parameters (JAX walks the
    trace to build an error message each time flax reads an RNG counter), several seconds for
    GPT-2 xl; the layers are identical, so one suffices. Vocabulary padding is not counted."""
    state = param_shapes(config.replace(num_layers=1))
    moe = config.moe_num_experts > 0
    head = "reward_head" if config.head == "reward" else "lm_head"
    groups = dict.fromkeys(("token_embedding", "positions", head, "attention")
                           + (("router", "experts") if moe else ("feed_forward",)) + ("norms",), 0)
    per_layer = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        keys = path_keys(path)
        if keys[0] == "layers":
            # ["layers", 0, "attention", ...] (a list) or ["layers", "attention", ...] (stacked)
            sublayer = next(k for k in keys[1:] if not k.isdigit())
            group = sublayer if sublayer in ("attention", "feed_forward") else "norms"
            if group == "feed_forward" and moe:
                group = "router" if "router" in keys else "experts"
            per_layer += leaf_size(leaf)
            size = leaf_size(leaf) * config.num_layers
        else:
            group = {"embed": "token_embedding", "position_embedding": "positions",
                     "lm_head": "lm_head", "reward_head": "reward_head"}.get(keys[0], "norms")
            size = leaf_size(leaf)
            if group in ("token_embedding", "lm_head"):  # [padded vocab, d] -> [vocab, d]
                size = size // config.padded_vocab_size * config.vocab_size
        groups[group] += size
    # A token uses k of the E experts of each layer.
    active = (sum(groups.values()) - groups["experts"] * (config.moe_num_experts - config.moe_top_k)
              // config.moe_num_experts) if moe else None
    return ParamCounts(groups, num_layers=config.num_layers, per_layer=per_layer, active=active)


def decoder_flops_parts(config: DecoderConfig, seq_len: int | None = None) -> dict[str, int]:
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


def ffn_params(config: DecoderConfig) -> int:
    """Parameters in the feed-forward sublayers of all layers (kernels and biases; with experts,
    all experts and the routers)."""
    groups = param_counts(config).groups
    return groups.get("feed_forward", 0) + groups.get("experts", 0) + groups.get("router", 0)
