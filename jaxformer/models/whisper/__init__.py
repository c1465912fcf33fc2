"""Whisper (speech to text: a log-mel audio encoder and a text decoder), registered on import:

    config.py   WhisperConfig (HF's names for the sizes)
    model.py    Whisper, its AudioEncoder; the decoder is the encoder-decoder family's Stack
    costs.py    parameters by part (HF's count), FLOPs per token
    family.py   the registry entry and the sizes table of `jaxformer info`
"""

from jaxformer.models.whisper.config import WhisperConfig
from jaxformer.models.whisper.family import WHISPER, whisper_sizes
from jaxformer.models.whisper.model import AudioEncoder, Whisper, sinusoids

__all__ = ["AudioEncoder", "WHISPER", "Whisper", "WhisperConfig", "sinusoids", "whisper_sizes"]
