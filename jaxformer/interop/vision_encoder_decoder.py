"""The vision_encoder_decoder family's HF converter: VisionEncoderDecoderModel with a ViT encoder
and a GPT-2 decoder (the layout of image-captioning checkpoints such as ViT-GPT2), import and
export.

config.json nests the two models' configs: `encoder` (a ViT's, read by `vit.py`) and `decoder`
(a GPT-2's with `add_cross_attention: true`, read by `decoder.py`); `decoder_start_token_id`
sits at the top level. The weights are those two tables under `encoder.` and `decoder.`, plus
GPT-2's cross-attention sublayer in each block and, when the two widths differ, HF's
`enc_to_dec_proj` (nn.Linear, [out, in]) between them.

GPT-2's cross-attention is Conv1D ([in, out]) like the rest of GPT-2: `q_attn` [D, D] for the
queries, `c_attn` [D, 2D] with key|value on the last axis, `c_proj` [D, D], and its own LayerNorm
`ln_cross_attn` before it.
"""

from typing import Any

from jaxformer.interop import decoder, vit
from jaxformer.interop.conventions import export_names, layer_norm
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, fused_qkv, reshaped
from jaxformer.models.decoder import DecoderConfig
from jaxformer.models.vision_encoder_decoder import (ImageEncoderConfig, TextDecoderConfig,
                                                     VisionEncoderDecoderConfig)

VISION_ENCODER_DECODER = "VisionEncoderDecoderModel"
MODEL_TYPES = {"vision-encoder-decoder": VISION_ENCODER_DECODER}


def config_from_hf(arch: str, hf: dict[str, Any]) -> VisionEncoderDecoderConfig:
    enc, dec = hf.get("encoder") or {}, hf.get("decoder") or {}
    kinds = (enc.get("model_type"), dec.get("model_type"))
    if kinds != ("vit", "gpt2"):
        raise UnsupportedConfigError(
            f"config.json pairs a {kinds[0]!r} encoder with a {kinds[1]!r} decoder: jaxformer "
            f"imports VisionEncoderDecoderModel with a 'vit' encoder and a 'gpt2' decoder")
    if dec.get("cross_attention_hidden_size") not in (None, dec.get("n_embd", 768)):
        raise UnsupportedConfigError(
            "config.json decoder.cross_attention_hidden_size is not supported: the image states "
            "reach GPT-2's cross-attention at the decoder's width (through enc_to_dec_proj)")
    image = vit.config_from_hf(vit.VIT_MODEL, enc)
    # GPT-2 with cross-attention is GPT-2's config plus the sublayer this family adds.
    text = decoder.gpt2_config({**dec, "add_cross_attention": False})
    start = hf.get("decoder_start_token_id", dec.get("decoder_start_token_id", dec.get("bos_token_id")))
    if start is None or not 0 <= start < text.vocab_size:
        raise UnsupportedConfigError(
            f"config.json decoder_start_token_id={start} is not a token of the decoder's "
            f"{text.vocab_size}-token vocabulary: set it to the token captions start with "
            f"(GPT-2: <|endoftext|>)")
    return VisionEncoderDecoderConfig(
        encoder=ImageEncoderConfig(
            image_size=image.image_size, patch_size=image.patch_size,
            num_channels=image.num_channels, d_model=image.d_model, num_layers=image.num_layers,
            num_heads=image.num_heads, mlp_dim=image.mlp_dim, activation=image.activation,
            norm_eps=image.norm_eps),
        decoder=TextDecoderConfig(
            vocab_size=text.vocab_size, d_model=text.d_model, num_layers=text.num_layers,
            num_heads=text.num_heads, mlp_dim=text.mlp_dim, max_seq_len=text.max_seq_len,
            position="learned", norm="layernorm", norm_eps=text.norm_eps, norm_position="pre",
            embedding_norm=False, activation=text.activation, use_bias=True,
            tie_embeddings=text.tie_embeddings, decoder_start_token_id=start))


def _gpt2(c: VisionEncoderDecoderConfig) -> DecoderConfig:
    """The text decoder's GPT-2 part (everything but cross-attention) as a decoder config."""
    d = c.decoder
    return DecoderConfig(
        vocab_size=d.vocab_size, vocab_pad_multiple=d.vocab_pad_multiple, d_model=d.d_model,
        num_layers=d.num_layers, num_heads=d.num_heads, mlp_dim=d.mlp_dim,
        max_seq_len=d.max_seq_len, position="learned", norm="layernorm", norm_eps=d.norm_eps,
        activation=d.activation, use_bias=True, tie_embeddings=d.tie_embeddings)


def export_architecture(c: VisionEncoderDecoderConfig) -> str:
    d = c.decoder
    problems = [name for name, bad in (
        ("decoder.position != 'learned'", d.position != "learned"),
        ("decoder.norm != 'layernorm'", d.norm != "layernorm"),
        ("decoder.norm_position != 'pre'", d.norm_position != "pre"),
        ("decoder.embedding_norm", d.embedding_norm), ("decoder.use_bias=False", not d.use_bias),
        (f"decoder.activation={d.activation}",
         d.activation not in export_names(decoder.GPT2_ACTIVATIONS)),
        (f"encoder.activation={c.encoder.activation}",
         c.encoder.activation not in export_names(vit.ACTIVATIONS)),
        ("scan_layers=True (export the per-layer layout)", c.scan_layers)) if bad]
    if problems:
        raise UnsupportedConfigError(
            f"VisionEncoderDecoderModel (ViT + GPT-2) cannot express this config "
            f"({', '.join(problems)})")
    return VISION_ENCODER_DECODER


def config_to_hf(arch: str, c: VisionEncoderDecoderConfig) -> dict[str, Any]:
    encoder = vit.config_to_hf(vit.VIT_MODEL, c.encoder_config())
    encoder.pop("architectures")
    text = decoder.config_to_hf(decoder.GPT2, _gpt2(c))
    text.pop("architectures")
    start = c.decoder.decoder_start_token_id
    text.update(add_cross_attention=True, is_decoder=True, decoder_start_token_id=start)
    return {"architectures": [arch], "model_type": "vision-encoder-decoder",
            "is_encoder_decoder": True, "encoder": encoder, "decoder": text,
            "decoder_start_token_id": start, "tie_word_embeddings": False,
            "torch_dtype": c.param_dtype}


# --- weight tables ---


def cross_attention_tensors(i: int, D: int, H: int) -> list[Tensor]:
    """Block i's cross-attention sublayer and its norm (names under `decoder.`)."""
    hf, hd = f"decoder.transformer.h.{i}.", D // H
    attention = ("decoder", "layers", i, "cross_attention")
    return [
        *layer_norm(hf + "ln_cross_attn", ("decoder", "layers", i, "cross_attention_norm"), D),
        reshaped(hf + "crossattention.q_attn.weight", (D, D), attention + ("query", "kernel"),
                 (D, H, hd)),
        reshaped(hf + "crossattention.q_attn.bias", (D,), attention + ("query", "bias"), (H, hd)),
        fused_qkv(hf + "crossattention.c_attn.weight", (D, 2 * D), attention, "kernel", H, hd,
                  parts=("key", "value")),
        fused_qkv(hf + "crossattention.c_attn.bias", (2 * D,), attention, "bias", H, hd,
                  parts=("key", "value")),
        reshaped(hf + "crossattention.c_proj.weight", (D, D), attention + ("out", "kernel"),
                 (H, hd, D)),
        reshaped(hf + "crossattention.c_proj.bias", (D,), attention + ("out", "bias"), (D,)),
    ]


def _under(prefix: str, top: tuple, row: Tensor) -> Tensor:
    return Tensor(prefix + row.name, row.shape, tuple(top + p for p in row.params), row.to_jax,
                  row.to_hf, row.part)


def tensors(arch: str, c: VisionEncoderDecoderConfig) -> list[Tensor]:
    rows = [_under("encoder.", ("encoder",), r) for r in vit.tensors(vit.VIT_MODEL, c.encoder_config())]
    for r in decoder.gpt2_tensors(_gpt2(c)):
        # The token table and an untied head sit at the model's top level; the rest is the stack.
        top = () if r.params[0][0] in ("embed", "lm_head") else ("decoder",)
        rows.append(_under("decoder.", top, r))
    for i in range(c.decoder.num_layers):
        rows += cross_attention_tensors(i, c.decoder.d_model, c.decoder.num_heads)
    if c.encoder.d_model != c.decoder.d_model:
        De, Dd = c.encoder.d_model, c.decoder.d_model
        rows += [reshaped("enc_to_dec_proj.weight", (Dd, De), ("enc_to_dec_proj", "kernel"),
                          (De, Dd), transpose=True),
                 reshaped("enc_to_dec_proj.bias", (Dd,), ("enc_to_dec_proj", "bias"), (Dd,))]
    return rows


CONVERTER = register_converter(Converter(
    family="vision_encoder_decoder", architectures=(VISION_ENCODER_DECODER,),
    model_types=MODEL_TYPES, config_from_hf=config_from_hf,
    export_architecture=export_architecture, config_to_hf=config_to_hf, tensors=tensors,
    base_prefix={}, ignored_suffixes=decoder.IGNORED_SUFFIXES))
