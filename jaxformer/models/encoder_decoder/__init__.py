"""The encoder-decoder family (the 2017 Transformer, T5, BART, Marian), registered on import:

    config.py   EncoderDecoderConfig
    model.py    EncoderDecoder, its Stack and blocks, the decoder's cache
    costs.py    parameters by part, FLOPs per token
    family.py   the registry entry and the sizes table of `jaxformer info`
"""

from jaxformer.models.encoder_decoder.config import STACKS, EncoderDecoderConfig
from jaxformer.models.encoder_decoder.family import ENCODER_DECODER, encoder_decoder_sizes
from jaxformer.models.encoder_decoder.model import (EncoderDecoder, Stack,
                                                    decoder_positions_and_segments,
                                                    init_decoder_cache, make_block)

__all__ = ["ENCODER_DECODER", "STACKS", "EncoderDecoder", "EncoderDecoderConfig", "Stack",
           "decoder_positions_and_segments", "encoder_decoder_sizes", "init_decoder_cache",
           "make_block"]
