"""Model families assembled from `jaxformer.nn` blocks, and the registry that names them.

Each family is a package (`decoder/`, `encoder/`, `encoder_decoder/`, `vit/`, `clip/`,
`vision_encoder_decoder/`, `whisper/`) holding its config, module, costs and registry entry;
importing it registers the family. Shared by all: `registry.py`, `output.py` (ModelOutput), `layers.py` (stacks
of blocks, scan and remat), `base_config.py`, `validation.py` and `counting.py` (parameter counts
and FLOPs).
"""

# Importing each family's package registers it.
from jaxformer.models.clip import CLIP, CLIPConfig
from jaxformer.models.decoder import DecoderConfig, DecoderLM
from jaxformer.models.encoder import Encoder, EncoderConfig
from jaxformer.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig
from jaxformer.models.output import ModelOutput
from jaxformer.models.registry import (Family, abstract_model, build_model, family_names,
                                       family_of, get_family, register_family)
from jaxformer.models.vision_encoder_decoder import (VisionEncoderDecoder,
                                                     VisionEncoderDecoderConfig)
from jaxformer.models.vit import ViT, ViTConfig
from jaxformer.models.whisper import Whisper, WhisperConfig

__all__ = ["CLIP", "CLIPConfig", "DecoderConfig", "DecoderLM", "Encoder", "EncoderConfig",
           "EncoderDecoder", "EncoderDecoderConfig", "Family", "ModelOutput", "ViT", "ViTConfig",
           "VisionEncoderDecoder", "VisionEncoderDecoderConfig", "Whisper", "WhisperConfig",
           "abstract_model", "build_model",
           "family_names", "family_of", "get_family", "register_family"]
