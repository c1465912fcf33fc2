"""What a Whisper model costs: parameters by part, counted as HF's `num_parameters()` counts them,
and training FLOPs per token."""

import jax

from jaxformer.models.counting import ParamCounts, leaf_size, param_shapes, path_keys
from jaxformer.models.encoder_decoder.costs import stack_layer_group
from jaxformer.models.whisper.config import WhisperConfig

GROUPS = ("token_embedding", "positions", "audio_stem", "encoder_attention",
          "encoder_feed_forward", "decoder_attention", "decoder_cross_attention",
          "decoder_feed_forward", "norms")


def whisper_param_counts(config: WhisperConfig) -> ParamCounts:
    """Counted from a copy with one layer per stack, each layer counted as often as its stack has
    layers. As HF counts: the tied output layer once, the padded vocabulary at its real size, and
    the encoder's frozen sinusoidal table (a parameter in HF too, with requires_grad off) among
    the positions with the decoder's learned table; the two convolutions are the audio stem."""
    c = config
    groups = dict.fromkeys(GROUPS, 0)
    state = param_shapes(c.replace(encoder_layers=1, decoder_layers=1))
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        keys = path_keys(path)
        size = leaf_size(leaf)
        layer = stack_layer_group(keys, c.encoder_layers, c.decoder_layers)
        if layer is not None:
            group, layers = layer
            size *= layers
        elif keys[0] in ("encoder", "decoder"):
            group = {"positions": "positions", "position_embedding": "positions",
                     "conv1": "audio_stem", "conv2": "audio_stem"}.get(keys[1], "norms")
        else:  # the token table
            group = "token_embedding"
            size = size // c.padded_vocab_size * c.vocab_size
        groups[group] += size
    return ParamCounts(groups, num_layers=c.num_layers)


def whisper_flops_parts(config: WhisperConfig, seq_len: int | None = None) -> dict[str, int]:
    """Training FLOPs per token, a token being an encoder state (S = max_source_positions of
    them, each made from 2 log-mel frames) or a decoder token (T = seq_len, default
    max_target_positions), averaged over the S + T of an example: the weights an encoder state
    passes (the stem, conv1 twice as it runs on both frames; the encoder's layers; every decoder
    layer's cross-attention keys and values) cost 6 per parameter, those a token passes (the
    rest) likewise; attention scores and weighted values cost 12 D per key per layer (PaLM
    appendix B): the encoder's over S keys, the decoder's self- and cross-attention over T and S.
    Position tables are left out, as for every family."""
    c = config
    S, T, D = c.max_source_positions, seq_len or c.max_target_positions, c.d_model
    counts = whisper_param_counts(c)
    conv1 = 3 * c.num_mel_bins * D + D
    per_state = (counts.audio_stem + conv1 + counts.encoder_attention
                 + counts.encoder_feed_forward
                 + 4 * c.encoder_layers * D + 2 * D  # their two LayerNorms, the final one
                 + c.decoder_layers * (2 * D * D + D))  # cross-attention keys (no bias), values
    per_token = counts.non_positional - per_state + conv1  # conv1 was counted twice above
    return {"6N, each weight over the positions that pass it":
                6 * (per_state * S + per_token * T) // (S + T),
            "12 x layers x d x keys (attention)":
                12 * (c.encoder_layers * D * S * S
                      + c.decoder_layers * D * T * (T + S)) // (S + T)}
