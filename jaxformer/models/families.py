"""Deprecated: each family registers itself in its own package (`jaxformer.models.decoder.family`,
...), all imported by `jaxformer.models`; kept for one release."""

from jaxformer.models.clip.family import CLIP_FAMILY, clip_sizes
from jaxformer.models.decoder.family import DECODER, decoder_sizes
from jaxformer.models.encoder.family import ENCODER
from jaxformer.models.encoder_decoder.family import ENCODER_DECODER
from jaxformer.models.vision_encoder_decoder.family import VISION_ENCODER_DECODER
from jaxformer.models.vit.family import VIT, vit_sizes

__all__ = ["CLIP_FAMILY", "DECODER", "ENCODER", "ENCODER_DECODER", "VISION_ENCODER_DECODER", "VIT",
           "clip_sizes", "decoder_sizes", "vit_sizes"]
