"""The interface every tokenizer offers: text <-> ids, display pieces, saving with a run."""

import abc
from pathlib import Path

import numpy as np


class Tokenizer(abc.ABC):
    """Maps text to integer ids in [0, vocab_size) and back.

    `eos_id` ends a document (None when the vocabulary has no such token); `pad_id` is the id
    written into padding positions (None: padding uses id 0 and is masked by segment id 0).
    """

    eos_id: int | None = None
    pad_id: int | None = None

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def decode(self, ids) -> str: ...

    @abc.abstractmethod
    def pieces(self, ids) -> list[str]:
        """The vocabulary entry of each id, for display (sentencepiece shows spaces as "▁")."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer into `directory`; returns the file written."""

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Equal for tokenizers that encode identically (keys the corpus token cache)."""

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as an int32 array [num_tokens]; subclasses vectorize it."""
        return np.asarray(self.encode(text), dtype=np.int32)
