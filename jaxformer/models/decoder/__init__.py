"""The decoder-only language model family (GPT-2, Llama, Mixtral), registered on import:

    config.py   DecoderConfig
    model.py    DecoderLM and its block
    costs.py    parameters by part, FLOPs per token
    family.py   the registry entry and the sizes table of `jaxformer info`
"""

from jaxformer.models.decoder.config import DecoderConfig
from jaxformer.models.decoder.family import DECODER, decoder_sizes
from jaxformer.models.decoder.model import DecoderLM, make_block

__all__ = ["DECODER", "DecoderConfig", "DecoderLM", "decoder_sizes", "make_block"]
