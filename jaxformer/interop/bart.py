"""BartForConditionalGeneration and MarianMTModel <-> the encoder-decoder family: import and export.

Both are post-norm encoder-decoders with biases everywhere, one token table shared by encoder,
decoder and the output layer, and a `final_logits_bias` added to the logits. They differ in
positions and embeddings:

- BART: a learned table per stack whose rows start at 2 (`max_position_embeddings + 2` rows; HF's
  offset), a LayerNorm right after the embeddings (`layernorm_embedding`), GELU (erf).
- Marian: sinusoidal positions with the sines in the first half and the cosines in the second,
  never saved; no embedding LayerNorm; embeddings scaled by sqrt(d_model) (`scale_embedding`);
  swish (SiLU).

The encoder and the decoder may differ in heads and feed-forward width (encoder_attention_heads /
decoder_attention_heads, encoder_ffn_dim / decoder_ffn_dim): the import writes the encoder's as
num_heads / mlp_dim and sets decoder_num_heads / decoder_mlp_dim only where the decoder's differ.

HF keeps `final_logits_bias` as a buffer: it is in the checkpoint but not counted as a parameter
(bart-base has 139,420,416 parameters without it). A checkpoint without it gets none; an export
of a model without one writes none, and transformers fills its zeros.
Weights are nn.Linear [out, in].
"""

from typing import Any

import numpy as np

from jaxformer.interop.conventions import activations, choose, export_names, layer_norm, linear
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, reshaped, vocab_table
from jaxformer.models.encoder_decoder import STACKS, EncoderDecoderConfig

BART = "BartForConditionalGeneration"
MARIAN = "MarianMTModel"
ACTIVATIONS = activations("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


def _per_stack(hf: dict, encoder_key: str, decoder_key: str, default) -> tuple[int, int | None]:
    """(the encoder's value, the decoder's where it differs, else None)."""
    encoder, decoder = hf.get(encoder_key, default), hf.get(decoder_key, default)
    return encoder, None if decoder == encoder else decoder


def config_from_hf(arch: str, hf: dict[str, Any]) -> EncoderDecoderConfig:
    activation = choose("activation_function", hf.get("activation_function", "gelu"), ACTIVATIONS)
    marian = arch == MARIAN
    if marian:
        if not hf.get("share_encoder_decoder_embeddings", True):
            raise UnsupportedConfigError("config.json share_encoder_decoder_embeddings=false is "
                                         "not supported: jaxformer shares one token table")
        if hf.get("decoder_vocab_size") not in (None, hf.get("vocab_size")):
            raise UnsupportedConfigError("config.json decoder_vocab_size differs from vocab_size: "
                                         "not supported (one shared vocabulary)")
    if not hf.get("tie_word_embeddings", True):
        raise UnsupportedConfigError("config.json tie_word_embeddings=false is not supported for "
                                     f"{arch}: the output layer is the shared token table")
    for key in ("normalize_before", "add_final_layer_norm"):  # mBART-style variants
        if hf.get(key):
            raise UnsupportedConfigError(f"config.json {key}=true is not supported for {arch}")
    heads, decoder_heads = _per_stack(hf, "encoder_attention_heads", "decoder_attention_heads", 16)
    mlp_dim, decoder_mlp_dim = _per_stack(hf, "encoder_ffn_dim", "decoder_ffn_dim", 4096)
    d_model = hf.get("d_model", 1024)
    return EncoderDecoderConfig(
        vocab_size=hf.get("vocab_size", 58101 if marian else 50265), d_model=d_model,
        encoder_layers=hf.get("encoder_layers", 12), decoder_layers=hf.get("decoder_layers", 12),
        num_heads=heads, decoder_num_heads=decoder_heads, mlp_dim=mlp_dim,
        decoder_mlp_dim=decoder_mlp_dim,
        max_seq_len=hf.get("max_position_embeddings", 1024),
        position="sinusoidal_halves" if marian else "learned", position_offset=0 if marian else 2,
        norm="layernorm", norm_eps=1e-5, norm_position="post", embedding_norm=not marian,
        activation=activation, use_bias=True,
        scale_embedding=bool(hf.get("scale_embedding", False)), attention_scale=True,
        tie_embeddings=True, scale_decoder_output=False, final_logits_bias=True,
        decoder_start_token_id=int(hf.get("decoder_start_token_id", 58100 if marian else 2)),
        init_std=hf.get("init_std", 0.02))


def config_from_checkpoint(arch: str, config: EncoderDecoderConfig, ckpt) -> EncoderDecoderConfig:
    """A checkpoint saved without `final_logits_bias` means a zero bias: none at all."""
    return config if "final_logits_bias" in ckpt.names() else config.replace(final_logits_bias=False)


def export_architecture(config: EncoderDecoderConfig) -> str:
    """BART or Marian, whichever the config's layout is; refused (with what differs) otherwise."""
    c = config
    marian = c.position == "sinusoidal_halves"
    problems = [text for bad, text in [
        (c.position not in ("learned", "sinusoidal_halves"),
         f"position={c.position!r} (BART learns its positions, Marian uses sinusoidal_halves)"),
        (c.position == "learned" and c.position_offset != 2, "BART's learned positions start at 2"),
        (marian and c.position_offset, "Marian's positions have no offset"),
        (c.embedding_norm == marian, "BART has an embedding LayerNorm and Marian none"),
        (c.norm != "layernorm" or c.norm_position != "post", "BART and Marian are post-norm "
                                                             "LayerNorm"),
        # transformers builds its LayerNorms with torch's default epsilon.
        (c.norm_eps != 1e-5, f"norm_eps={c.norm_eps} (BART and Marian: 1e-5)"),
        (not c.use_bias, "use_bias=False (BART and Marian have biases)"),
        (not c.attention_scale, "attention_scale=False (BART and Marian scale scores)"),
        (not c.tie_embeddings or c.scale_decoder_output,
         "BART and Marian tie the output layer to the embedding, unscaled"),
        (any(c.head_dim not in (None, c.d_model // c.stack_heads(s)) for s in STACKS),
         f"head_dim={c.head_dim} (BART's heads split d_model)"),
        (c.activation not in ACTIVATIONS.values(), f"activation={c.activation!r}"),
        (c.scan_layers, "scan_layers=True (export the per-layer layout)"),
    ] if bad]
    if problems:
        raise UnsupportedConfigError("not BART or Marian: " + "; ".join(problems))
    return MARIAN if marian else BART


def config_to_hf(arch: str, config: EncoderDecoderConfig) -> dict[str, Any]:
    c = config
    marian = arch == MARIAN
    # Marian decodes from its pad token; BART's ids are HF's defaults (<s> 0, <pad> 1, </s> 2).
    tokens = (dict(pad_token_id=c.decoder_start_token_id, eos_token_id=0) if marian else
              dict(bos_token_id=0, pad_token_id=1, eos_token_id=2, forced_eos_token_id=2))
    return {
        "architectures": [arch], "model_type": "marian" if marian else "bart",
        "is_encoder_decoder": True, "vocab_size": c.vocab_size, "d_model": c.d_model,
        "encoder_layers": c.encoder_layers, "decoder_layers": c.decoder_layers,
        "encoder_attention_heads": c.stack_heads("encoder"),
        "decoder_attention_heads": c.stack_heads("decoder"),
        "encoder_ffn_dim": c.stack_mlp_dim("encoder"),
        "decoder_ffn_dim": c.stack_mlp_dim("decoder"),
        "max_position_embeddings": c.max_seq_len,
        "activation_function": export_names(ACTIVATIONS)[c.activation],
        "scale_embedding": c.scale_embedding, "tie_word_embeddings": True,
        "decoder_start_token_id": c.decoder_start_token_id, **tokens,
        "dropout": c.dropout, "attention_dropout": 0.0, "activation_dropout": 0.0,
        "init_std": c.init_std, "torch_dtype": c.param_dtype,
    }


def _linear(hf_name: str, path: tuple, c: EncoderDecoderConfig, stack: str,
            kind: str) -> list[Tensor]:
    """weight + bias of one nn.Linear of `stack`; kind: "in" (q/k/v), "out" (out_proj), "up",
    "down"."""
    D, F = c.d_model, c.stack_mlp_dim(stack)
    H, hd = c.stack_heads(stack), c.stack_head_size(stack)
    in_out = {"in": ((D,), (H, hd)), "out": ((H, hd), (D,)), "up": ((D,), (F,)),
              "down": ((F,), (D,))}
    return linear(hf_name, path, *in_out[kind])


def tensors(arch: str, config: EncoderDecoderConfig) -> list[Tensor]:
    c = config
    D, V = c.d_model, c.vocab_size
    rows = [vocab_table("model.shared.weight", V, D, ("embed", "embedding"), c.padded_vocab_size)]
    if c.final_logits_bias:
        pad = c.padded_vocab_size - V
        rows.append(Tensor("final_logits_bias", (1, V), (("final_logits_bias",),),
                           lambda w: (np.pad(w[0], (0, pad)),), lambda p: p[None, :V]))
    for stack, layers in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        prefix = f"model.{stack}."
        if c.position == "learned":
            rows.append(reshaped(prefix + "embed_positions.weight",
                                 (c.max_seq_len + c.position_offset, D),
                                 (stack, "position_embedding", "embedding"),
                                 (c.max_seq_len + c.position_offset, D)))
        if c.embedding_norm:
            rows += layer_norm(prefix + "layernorm_embedding", (stack, "embedding_norm"), D)
        for i in range(layers):
            hf, ours = f"{prefix}layers.{i}.", (stack, "layers", i)
            attentions = [("self_attn", "attention")]
            if stack == "decoder":
                attentions.append(("encoder_attn", "cross_attention"))
            for hf_attn, attn in attentions:
                for part, proj in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
                    rows += _linear(f"{hf}{hf_attn}.{part}", ours + (attn, proj), c, stack, "in")
                rows += _linear(f"{hf}{hf_attn}.out_proj", ours + (attn, "out"), c, stack, "out")
                rows += layer_norm(f"{hf}{hf_attn}_layer_norm", ours + (attn + "_norm",), D)
            rows += _linear(hf + "fc1", ours + ("feed_forward", "up"), c, stack, "up")
            rows += _linear(hf + "fc2", ours + ("feed_forward", "down"), c, stack, "down")
            rows += layer_norm(hf + "final_layer_norm", ours + ("feed_forward_norm",), D)
    return rows


# Tied copies of the shared table, and Marian's sinusoidal tables (recomputed, never needed).
IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
           "encoder.embed_positions.weight", "decoder.embed_positions.weight")
