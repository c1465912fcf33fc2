"""Model families assembled from `jaxformer.nn` blocks, and the registry that names them."""

from jaxformer.models import families  # noqa: F401  (registers the built-in families)
from jaxformer.models.config import DecoderConfig
from jaxformer.models.decoder import DecoderLM
from jaxformer.models.encoder_decoder import EncoderDecoder
from jaxformer.models.encoder_decoder_config import EncoderDecoderConfig
from jaxformer.models.output import ModelOutput
from jaxformer.models.registry import (Family, abstract_model, build_model, family_names,
                                       family_of, get_family, register_family)

__all__ = ["DecoderConfig", "DecoderLM", "EncoderDecoder", "EncoderDecoderConfig", "Family",
           "ModelOutput", "abstract_model", "build_model", "family_names", "family_of",
           "get_family", "register_family"]
