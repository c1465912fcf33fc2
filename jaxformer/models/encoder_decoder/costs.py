"""What an encoder-decoder costs: parameters by part (HF's count) and training FLOPs per token."""

import jax

from jaxformer.models.counting import (ParamCounts, count_params, leaf_size, param_shapes,
                                       path_keys)
from jaxformer.models.encoder_decoder.config import STACKS, EncoderDecoderConfig

GROUPS = ("token_embedding", "positions", "lm_head", "encoder_attention", "encoder_feed_forward",
          "decoder_attention", "decoder_cross_attention", "decoder_feed_forward", "norms")


def stack_layer_group(keys: tuple[str, ...], encoder_layers: int, decoder_layers: int
                      ) -> tuple[str, int] | None:
    """For a parameter of a one-layer-per-stack copy (its path `keys`): (its group, e.g.
    "decoder_cross_attention" or "norms", and how many layers of its stack the real model has),
    or None for a parameter outside the stacks' layers."""
    if keys[0] not in STACKS or keys[1] != "layers":
        return None
    sublayer = next(k for k in keys[2:] if not k.isdigit())
    group = (f"{keys[0]}_{sublayer}" if sublayer in ("attention", "cross_attention", "feed_forward")
             else "norms")
    return group, encoder_layers if keys[0] == "encoder" else decoder_layers


def encoder_decoder_param_counts(config: EncoderDecoderConfig) -> ParamCounts:
    """Counted from a copy with one layer per stack, each layer counted as often as the stack has
    layers (a stack's layers are identical; each stack has its own heads and width). As HF
    counts: tied weights once, the padded vocabulary at its real size, and `final_logits_bias`
    left out (HF keeps it as a buffer, not a parameter).
    Relative position tables count as positions (left out of N in the FLOPs, as tables are)."""
    c = config
    state = param_shapes(c.replace(encoder_layers=1, decoder_layers=1))
    groups = dict.fromkeys(GROUPS, 0)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        keys = path_keys(path)
        size = leaf_size(leaf)
        layer = stack_layer_group(keys, c.encoder_layers, c.decoder_layers)
        if layer is not None:
            group, layers = layer
            size *= layers
        elif keys[0] in ("encoder", "decoder"):
            group = ("positions" if keys[1] in ("position_embedding", "relative_bias")
                     else "norms")
        elif keys[0] == "final_logits_bias":
            continue
        else:
            group = {"embed": "token_embedding", "lm_head": "lm_head"}[keys[0]]
            size = size // c.padded_vocab_size * c.vocab_size
        groups[group] += size
    # per_layer stays 0: an encoder layer and a decoder layer differ.
    return ParamCounts(groups, num_layers=c.encoder_layers + c.decoder_layers)


def encoder_decoder_flops_parts(config: EncoderDecoderConfig, seq_len: int | None = None
                                ) -> dict[str, int]:
    """Training FLOPs per token, a token being a source or a target token and sources as long as
    targets (T each): each token passes one stack, so the weight matmuls cost 6N / 2 per token on
    average (N all parameters but position tables); attention scores and weighted values cost
    12 d T per layer per token (PaLM appendix B), over the encoder's self-attention for a source
    token and the decoder's self- and cross-attention for a target token; d is each stack's
    heads x head size."""
    c = config
    seq_len = seq_len or c.max_seq_len
    width = {stack: c.stack_heads(stack) * c.stack_head_size(stack) for stack in STACKS}
    return {"3N (6N / 2: a token passes one stack)": 3 * count_params(c, include_positions=False),
            "6 x (enc + 2 dec layers) x d x T (attention)":
                6 * (c.encoder_layers * width["encoder"]
                     + 2 * c.decoder_layers * width["decoder"]) * seq_len}

