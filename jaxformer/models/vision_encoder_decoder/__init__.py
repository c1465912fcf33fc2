"""The image-to-text family (HF's VisionEncoderDecoderModel: a ViT and a text decoder with
cross-attention), registered on import:

    config.py   VisionEncoderDecoderConfig with its encoder and decoder sections
    model.py    VisionEncoderDecoder
    costs.py    parameters by part, FLOPs per token
    family.py   the registry entry and the sizes table of `jaxformer info`
"""

from jaxformer.models.vision_encoder_decoder.config import (ImageEncoderConfig, TextDecoderConfig,
                                                            VisionEncoderDecoderConfig)
from jaxformer.models.vision_encoder_decoder.family import (VISION_ENCODER_DECODER,
                                                            vision_encoder_decoder_sizes)
from jaxformer.models.vision_encoder_decoder.model import VisionEncoderDecoder

__all__ = ["ImageEncoderConfig", "TextDecoderConfig", "VISION_ENCODER_DECODER",
           "VisionEncoderDecoder", "VisionEncoderDecoderConfig", "vision_encoder_decoder_sizes"]
