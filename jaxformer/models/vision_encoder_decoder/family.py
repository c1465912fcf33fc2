"""The image-to-text family's entry in the registry, with its sizes table for `jaxformer info`."""

from jaxformer.models.registry import Family, register_family
from jaxformer.models.vision_encoder_decoder.config import VisionEncoderDecoderConfig
from jaxformer.models.vision_encoder_decoder.costs import (vision_encoder_decoder_flops_parts,
                                                           vision_encoder_decoder_param_counts)
from jaxformer.models.vision_encoder_decoder.model import VisionEncoderDecoder


def vision_encoder_decoder_sizes(c: VisionEncoderDecoderConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    e, d = c.encoder, c.decoder
    return [
        ("P", "encoder.patch_size", e.patch_size,
         f"{e.image_size} px images: {c.num_patches} patches + [CLS]"),
        ("De", "encoder.d_model", e.d_model, f"{e.num_layers} ViT layers, {e.num_heads} heads, "
                                             f"mlp {e.mlp_dim}"),
        ("V", "decoder.vocab_size", d.vocab_size, f"captions up to {d.max_seq_len} tokens"),
        ("Dd", "decoder.d_model", d.d_model,
         f"{d.num_layers} layers with cross-attention, {d.num_heads} heads, mlp {d.mlp_dim}"
         + ("" if e.d_model == d.d_model else f"; patches projected from {e.d_model}")),
    ]


VISION_ENCODER_DECODER = register_family(Family(
    name="vision_encoder_decoder", config_class=VisionEncoderDecoderConfig,
    model_class=VisionEncoderDecoder, default_task="image_captioning",
    description="image to text: a ViT encoder and a text decoder with cross-attention",
    param_counts=vision_encoder_decoder_param_counts,
    flops_parts=vision_encoder_decoder_flops_parts, sizes=vision_encoder_decoder_sizes))
