"""What an image-to-text model costs: parameters by part, counted as HF counts them."""

import dataclasses

import jax

from jaxformer.models.counting import ParamCounts, leaf_size, param_shapes, path_keys
from jaxformer.models.vision_encoder_decoder.config import VisionEncoderDecoderConfig

GROUPS = ("token_embedding", "positions", "lm_head", "image_encoder", "enc_to_dec_proj",
          "decoder_attention", "decoder_cross_attention", "decoder_feed_forward", "norms")


def vision_encoder_decoder_param_counts(config: VisionEncoderDecoderConfig) -> ParamCounts:
    """Counted from a copy with one layer per part, each layer counted as often as its stack has
    layers. Tied weights once, the padded vocabulary at its real size; both position tables (the
    ViT's patch positions and the decoder's) count as positions; the ViT's layers, patch
    projection, [CLS] token and final norm as image_encoder; the decoder's norms as norms."""
    c = config
    one = c.replace(encoder=dataclasses.replace(c.encoder, num_layers=1),
                    decoder=dataclasses.replace(c.decoder, num_layers=1))
    vocab, padded = c.decoder.vocab_size, c.decoder_config().padded_vocab_size
    groups = dict.fromkeys(GROUPS, 0)
    for path, leaf in jax.tree_util.tree_leaves_with_path(param_shapes(one)):
        keys = path_keys(path)
        size = leaf_size(leaf)
        if keys[0] == "encoder":
            group = "positions" if keys[1] == "position_embedding" else "image_encoder"
            size *= c.encoder.num_layers if keys[1] == "layers" else 1
        elif keys[0] == "decoder" and keys[1] == "layers":
            sublayer = next(k for k in keys[2:] if not k.isdigit())
            group = (f"decoder_{sublayer}" if sublayer in ("attention", "cross_attention",
                                                           "feed_forward") else "norms")
            size *= c.decoder.num_layers
        elif keys[0] == "decoder":
            group = "positions" if keys[1] == "position_embedding" else "norms"
        elif keys[0] == "enc_to_dec_proj":
            group = "enc_to_dec_proj"
        else:
            group = {"embed": "token_embedding", "lm_head": "lm_head"}[keys[0]]
            size = size // padded * vocab
        groups[group] += size
    if not groups["enc_to_dec_proj"]:
        del groups["enc_to_dec_proj"]  # equal widths: no projection
    return ParamCounts(groups, num_layers=c.encoder.num_layers + c.decoder.num_layers)


def vision_encoder_decoder_flops_parts(config: VisionEncoderDecoderConfig,
                                       seq_len: int | None = None) -> dict[str, int]:
    """Training FLOPs per token, a token being an image position ([CLS] or a patch, I of them)
    or a caption position (T = seq_len, default the decoder's context), averaged over the I + T
    of a row: the weights an image position passes (the ViT, the projection to the decoder's
    width, and every decoder layer's cross-attention keys and values, computed once per patch)
    cost 6 per parameter, those a caption position passes (the rest) likewise; attention scores
    and weighted values cost 12 d per key per layer (PaLM appendix B): the ViT's over I keys for
    an image position, the decoder's self- and cross-attention over T and I keys for a caption
    position. Position tables are left out, as for every family."""
    c, e, d = config, config.encoder, config.decoder
    seq_len = seq_len or d.max_seq_len
    image, text = 1 + c.num_patches, seq_len
    counts = vision_encoder_decoder_param_counts(c)
    per_image = counts.groups["image_encoder"] + counts.groups.get("enc_to_dec_proj", 0)
    per_image += d.num_layers * 2 * (d.d_model * d.d_model + (d.d_model if d.use_bias else 0))
    per_text = counts.non_positional - per_image
    tokens = image + text
    return {"6N, each weight over the positions that pass it":
                6 * (per_image * image + per_text * text) // tokens,
            "12 x layers x d x keys (attention)":
                12 * (e.num_layers * e.d_model * image * image
                      + d.num_layers * d.d_model * text * (text + image)) // tokens}

