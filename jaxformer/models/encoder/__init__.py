"""The encoder family (BERT and its fine-tuning heads), registered on import:

    config.py   EncoderConfig and the head names
    model.py    Encoder and its embeddings
    heads.py    the pooler and BERT's heads
    costs.py    parameters by part, FLOPs per token
    family.py   the registry entry and the sizes table of `jaxformer info`
"""

from jaxformer.models.encoder.config import EncoderConfig
from jaxformer.models.encoder.family import ENCODER, encoder_sizes
from jaxformer.models.encoder.model import (Encoder, EncoderEmbeddings, TokenTypeEmbed, make_block,
                                            segment_positions)

__all__ = ["ENCODER", "Encoder", "EncoderConfig", "EncoderEmbeddings", "TokenTypeEmbed",
           "encoder_sizes", "make_block", "segment_positions"]
