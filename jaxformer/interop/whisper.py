"""WhisperForConditionalGeneration <-> the whisper family, import and export.

config.json's names are the config's (d_model, encoder_layers, encoder_attention_heads,
encoder_ffn_dim, num_mel_bins, max_source_positions, ...); `activation_function` becomes
`activation`. Weights are nn.Linear [out, in]; the attention keys have no bias. The two stem
convolutions are nn.Conv1d, weight [out, in, 3], which become our [3, in, out] kernels. The
encoder's `embed_positions.weight` (HF keeps the sinusoids as a frozen parameter) is read as it is
stored, so a checkpoint loads exactly. The output layer `proj_out` is the decoder's token table
(tied): a copy of it in the file is skipped.

Refused: `scale_embedding: true` (transformers no longer applies the scale, earlier releases did,
so the function depends on the release), an untied `proj_out` (`tie_word_embeddings: false`), and
SpecAugment during training (`apply_spec_augment: true`), which the family does not implement.
Layer drop and attention / activation dropout, training-time settings, are not kept; `dropout` is.
Generation settings (`suppress_tokens`, `begin_suppress_tokens`, `forced_decoder_ids`) are
arguments of `jaxformer.generate`, not part of the config.
"""

from typing import Any

from jaxformer.interop.conventions import activations, choose, export_names, layer_norm, linear
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, reshaped, vocab_table
from jaxformer.models.whisper import WhisperConfig

WHISPER = "WhisperForConditionalGeneration"
MODEL_TYPES = {"whisper": WHISPER}
ACTIVATIONS = activations("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
SIZES = ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers",
         "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
         "decoder_ffn_dim", "max_source_positions", "max_target_positions")
# transformers' WhisperConfig defaults (whisper-tiny's sizes; its token ids are 50257).
HF_DEFAULTS = dict(vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4,
                   decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
                   encoder_ffn_dim=1536, decoder_ffn_dim=1536, max_source_positions=1500,
                   max_target_positions=448, decoder_start_token_id=50257, eos_token_id=50257)


def config_from_hf(arch: str, hf: dict[str, Any]) -> WhisperConfig:
    for key, why in (("scale_embedding", "transformers releases disagree on whether the token "
                                         "embeddings are scaled by sqrt(d_model)"),
                     ("apply_spec_augment", "jaxformer's Whisper has no SpecAugment")):
        if hf.get(key, False):
            raise UnsupportedConfigError(f"config.json {key}=true is not supported ({why})")
    if not hf.get("tie_word_embeddings", True):
        raise UnsupportedConfigError("config.json tie_word_embeddings=false is not supported: "
                                     "Whisper's output layer is the decoder's token table")
    values = {key: hf.get(key, default) for key, default in HF_DEFAULTS.items()}
    for key in ("decoder_start_token_id", "eos_token_id"):
        if not isinstance(values[key], int) or not 0 <= values[key] < values["vocab_size"]:
            raise UnsupportedConfigError(
                f"config.json {key}={values[key]!r} is not a token of the "
                f"{values['vocab_size']}-token vocabulary")
    for stack in ("encoder", "decoder"):
        heads = values[f"{stack}_attention_heads"]
        if values["d_model"] % heads:
            raise UnsupportedConfigError(f"config.json d_model={values['d_model']} is not "
                                         f"divisible by {stack}_attention_heads={heads}")
    return WhisperConfig(
        **values, activation=choose("activation_function", hf.get("activation_function", "gelu"),
                                    ACTIVATIONS),
        dropout=float(hf.get("dropout", 0.0)), init_std=float(hf.get("init_std", 0.02)))


def export_architecture(c: WhisperConfig) -> str:
    if c.scan_layers:
        raise UnsupportedConfigError("WhisperForConditionalGeneration export writes the per-layer "
                                     "layout: export a model with scan_layers=False")
    if c.activation not in export_names(ACTIVATIONS):
        raise UnsupportedConfigError(f"activation={c.activation} has no HF name in Whisper")
    return WHISPER


def config_to_hf(arch: str, c: WhisperConfig) -> dict[str, Any]:
    return {"architectures": [arch], "model_type": "whisper", "is_encoder_decoder": True,
            **{key: getattr(c, key) for key in SIZES},
            "activation_function": export_names(ACTIVATIONS)[c.activation],
            "dropout": c.dropout, "attention_dropout": 0.0, "activation_dropout": 0.0,
            "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "scale_embedding": False,
            "apply_spec_augment": False, "tie_word_embeddings": True, "init_std": c.init_std,
            "decoder_start_token_id": c.decoder_start_token_id, "eos_token_id": c.eos_token_id,
            "bos_token_id": c.eos_token_id, "pad_token_id": c.eos_token_id,
            "torch_dtype": c.param_dtype}


def conv1d(name: str, path: tuple, channels_in: int, channels_out: int) -> list[Tensor]:
    """An nn.Conv1d of kernel 3: weight [out, in, 3] -> kernel [3, in, out]; bias [out]."""
    def to_jax(w):
        return (w.transpose(2, 1, 0),)

    def to_hf(p):
        return p.transpose(2, 1, 0)

    return [Tensor(name + ".weight", (channels_out, channels_in, 3), (path + ("kernel",),),
                   to_jax, to_hf),
            reshaped(name + ".bias", (channels_out,), path + ("bias",), (channels_out,))]


def attention(hf: str, ours: tuple, D: int, heads: int) -> list[Tensor]:
    """q/k/v/out of one WhisperAttention (no bias on k_proj)."""
    hd = D // heads
    rows = []
    for part, proj in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        rows += linear(f"{hf}.{part}", ours + (proj,), (D,), (heads, hd), bias=part != "k_proj")
    return rows + linear(f"{hf}.out_proj", ours + ("out",), (heads, hd), (D,))


def tensors(arch: str, c: WhisperConfig) -> list[Tensor]:
    D = c.d_model
    rows = conv1d("model.encoder.conv1", ("encoder", "conv1"), c.num_mel_bins, D)
    rows += conv1d("model.encoder.conv2", ("encoder", "conv2"), D, D)
    rows += [reshaped("model.encoder.embed_positions.weight", (c.max_source_positions, D),
                      ("encoder", "positions"), (c.max_source_positions, D)),
             vocab_table("model.decoder.embed_tokens.weight", c.vocab_size, D,
                         ("embed", "embedding"), c.padded_vocab_size),
             reshaped("model.decoder.embed_positions.weight", (c.max_target_positions, D),
                      ("decoder", "position_embedding", "embedding"), (c.max_target_positions, D))]
    for stack in ("encoder", "decoder"):
        heads, ffn = getattr(c, f"{stack}_attention_heads"), getattr(c, f"{stack}_ffn_dim")
        for i in range(getattr(c, f"{stack}_layers")):
            hf, ours = f"model.{stack}.layers.{i}.", (stack, "layers", i)
            sublayers = [("self_attn", "attention")]
            if stack == "decoder":
                sublayers.append(("encoder_attn", "cross_attention"))
            for hf_attn, attn in sublayers:
                rows += attention(hf + hf_attn, ours + (attn,), D, heads)
                rows += layer_norm(f"{hf}{hf_attn}_layer_norm", ours + (attn + "_norm",), D)
            rows += linear(hf + "fc1", ours + ("feed_forward", "up"), (D,), (ffn,))
            rows += linear(hf + "fc2", ours + ("feed_forward", "down"), (ffn,), (D,))
            rows += layer_norm(hf + "final_layer_norm", ours + ("feed_forward_norm",), D)
        rows += layer_norm(f"model.{stack}.layer_norm", (stack, "final_norm"), D)
    return rows


CONVERTER = register_converter(Converter(
    family="whisper", architectures=(WHISPER,), model_types=MODEL_TYPES,
    config_from_hf=config_from_hf, export_architecture=export_architecture,
    config_to_hf=config_to_hf, tensors=tensors, base_prefix={},
    ignored_suffixes=("proj_out.weight",)))
