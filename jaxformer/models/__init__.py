"""Model families assembled from `jaxformer.nn` blocks."""

from jaxformer.models.config import DecoderConfig
from jaxformer.models.decoder import DecoderLM

__all__ = ["DecoderConfig", "DecoderLM"]
