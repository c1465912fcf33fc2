"""The built-in model families, registered with `jaxformer.models.registry` on import."""

from jaxformer.models import (costs, encoder_costs, encoder_decoder_costs,
                              vision_encoder_decoder_costs)
from jaxformer.models.clip import CLIP
from jaxformer.models.clip_config import CLIPConfig
from jaxformer.models.config import DecoderConfig
from jaxformer.models.decoder import DecoderLM
from jaxformer.models.encoder import Encoder
from jaxformer.models.encoder_config import EncoderConfig
from jaxformer.models.encoder_decoder import EncoderDecoder
from jaxformer.models.encoder_decoder_config import EncoderDecoderConfig
from jaxformer.models.registry import Family, register_family
from jaxformer.models.vision_encoder_decoder import VisionEncoderDecoder
from jaxformer.models.vision_encoder_decoder_config import VisionEncoderDecoderConfig
from jaxformer.models.vit import ViT
from jaxformer.models.vit_config import ViTConfig
from jaxformer.parallel.rules import declare_logical_axis


def decoder_sizes(c: DecoderConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    heads = f"{c.kv_heads} key/value heads, head dim {c.head_size}"
    ffn = c.activation + (" (gated: 3 matrices)" if c.activation.endswith("glu") else "")
    position = c.position + (f", theta {c.rope_theta:g}" if c.position == "rope" else "")
    if c.position == "rope" and c.rope_scaling is not None:
        position += f", scaled x{c.rope_scaling.factor:g} (Llama 3.1)"
    vocab = (f"table padded to {c.padded_vocab_size:,} rows"
             if c.padded_vocab_size != c.vocab_size else "")
    if c.pattern is not None:
        position += f"; attention: {c.pattern.describe()}"
    rows = [
        ("V", "vocab_size", c.vocab_size, vocab),
        ("D", "d_model", c.d_model, ""),
        ("C", "max_seq_len", c.max_seq_len, f"positions: {position}"),
        ("H", "num_heads", c.num_heads, heads),
        ("I", "mlp_dim", c.expert_dim if c.moe_num_experts else c.ffn_dim, ffn),
        ("L", "num_layers", c.num_layers, f"{c.norm_position}-{c.norm}"),
    ]
    if c.moe_num_experts:
        rows.append(("E", "moe_num_experts", c.moe_num_experts,
                     f"top-{c.moe_top_k} per token ({c.moe_router}, {c.moe_dispatch} dispatch)"))
    return rows


DECODER = register_family(Family(
    name="decoder", config_class=DecoderConfig, model_class=DecoderLM, default_task="causal_lm",
    description="decoder-only language model (GPT-2, Llama)",
    param_counts=costs.decoder_param_counts, flops_parts=costs.decoder_flops_parts,
    sizes=decoder_sizes))


# T5's relative position tables [buckets, heads]: small, kept whole on every device.
declare_logical_axis("relative_buckets", None)
ENCODER_DECODER = register_family(Family(
    name="encoder_decoder", config_class=EncoderDecoderConfig, model_class=EncoderDecoder,
    default_task="seq2seq",
    description="encoder-decoder (2017 Transformer, T5 v1.0/v1.1, BART, Marian)",
    param_counts=encoder_decoder_costs.encoder_decoder_param_counts,
    flops_parts=encoder_decoder_costs.encoder_decoder_flops_parts,
    sizes=encoder_decoder_costs.encoder_decoder_sizes))


ENCODER = register_family(Family(
    name="encoder", config_class=EncoderConfig, model_class=Encoder, default_task="masked_lm",
    description="bidirectional encoder with BERT's heads (masked LM, NSP, classification, QA)",
    param_counts=encoder_costs.encoder_param_counts, flops_parts=encoder_costs.encoder_flops_parts,
    sizes=encoder_costs.encoder_sizes))


def vit_sizes(c: ViTConfig) -> list[tuple[str, str, int, str]]:
    head = f"{c.num_labels} labels" if c.num_labels else "no head (features)"
    return [
        ("P", "patch_size", c.patch_size, f"{c.image_size} px images: {c.num_patches} patches + [CLS]"),
        ("D", "d_model", c.d_model, ""),
        ("H", "num_heads", c.num_heads, f"head dim {c.head_size}"),
        ("I", "mlp_dim", c.mlp_dim, c.activation),
        ("L", "num_layers", c.num_layers, "pre-layernorm" + (", pooler" if c.pooler else "")),
        ("K", "num_labels", c.num_labels, head),
    ]


VIT = register_family(Family(
    name="vit", config_class=ViTConfig, model_class=ViT, default_task="image_classification",
    description="Vision Transformer (ViT): image classification and features", sizes=vit_sizes))


def clip_sizes(c: CLIPConfig) -> list[tuple[str, str, int, str]]:
    t, v = c.text, c.vision
    return [
        ("V", "text.vocab_size", t.vocab_size, f"context {t.max_seq_len} tokens"),
        ("Dt", "text.d_model", t.d_model, f"{t.num_layers} causal layers, {t.num_heads} heads, "
                                          f"mlp {t.mlp_dim}"),
        ("Dv", "vision.d_model", v.d_model, f"{v.num_layers} layers, {v.num_heads} heads, mlp "
                                            f"{v.mlp_dim}, patch {v.patch_size} of {v.image_size} px"),
        ("P", "projection_dim", c.projection_dim, f"logit scale clamped at {c.max_logit_scale:g}"),
    ]


CLIP_FAMILY = register_family(Family(
    name="clip", config_class=CLIPConfig, model_class=CLIP, default_task="contrastive",
    description="CLIP: contrastive text and image towers (zero-shot classification)",
    sizes=clip_sizes))


VISION_ENCODER_DECODER = register_family(Family(
    name="vision_encoder_decoder", config_class=VisionEncoderDecoderConfig,
    model_class=VisionEncoderDecoder, default_task="image_captioning",
    description="image to text: a ViT encoder and a text decoder with cross-attention",
    param_counts=vision_encoder_decoder_costs.vision_encoder_decoder_param_counts,
    flops_parts=vision_encoder_decoder_costs.vision_encoder_decoder_flops_parts,
    sizes=vision_encoder_decoder_costs.vision_encoder_decoder_sizes))
