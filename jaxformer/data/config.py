"""What text to train on and how to cut it into batches (config only)."""

import dataclasses
from pathlib import Path

from jaxformer.errors import ConfigError

TRAINED_TOKENIZERS = ("bpe", "unigram")  # sentencepiece model types trained in-process
TOKENIZERS = ("char",) + TRAINED_TOKENIZERS + ("wordpiece",)  # wordpiece: BERT's, trained


@dataclasses.dataclass
class DataConfig:
    """The `data:` section of a training config.

    corpus: a registered name ("tinyshakespeare"), a text file (one document) or a directory
        whose `*.txt` files (searched recursively, sorted by path) are the documents.
    tokenizer: "char" (vocabulary = the corpus's distinct characters, as nanoGPT does), "bpe" or
        "unigram" (a sentencepiece model trained from the corpus), "wordpiece" (BERT's, trained
        from the corpus), a path to a sentencepiece `.model` file, or a path to a WordPiece
        `vocab.txt` (or a directory holding one).
    vocab_size: size of a trained sentencepiece vocabulary; 0 picks 1024. Must stay 0 for "char"
        (its size is the number of distinct characters).
    packing: True packs documents (each + end-of-document token) into rows with segment ids;
        False cuts random windows from one token stream; None picks packing when the corpus has
        several documents and windows for a single text.
    val_fraction: the last fraction of the token stream (or of the documents) held out for
        validation; nanoGPT uses 0.1.
    seed: seeds the window positions and the document order (combined with the run's seed).
    prefetch: train batches a background thread prepares ahead (0: none, batches are made on
        demand). Worth it for packed documents on an accelerator: grain packs in Python at
        ~0.1 ms per document piece; random windows cost ~0.05 ms per batch and need none.
    """

    corpus: str = "tinyshakespeare"
    tokenizer: str = "char"
    vocab_size: int = 0
    packing: bool | None = None
    val_fraction: float = 0.1
    seed: int = 0
    prefetch: int = 0

    def __post_init__(self):
        if not self.corpus:
            raise ConfigError("data.corpus is empty: give a corpus name (tinyshakespeare) "
                              "or a path to a text file or a directory of .txt files")
        if self.tokenizer not in TOKENIZERS and not self.tokenizer.endswith((".model", ".txt")) \
                and not Path(self.tokenizer).expanduser().is_dir():
            raise ConfigError(f"data.tokenizer={self.tokenizer!r} is not one of {list(TOKENIZERS)} "
                              "nor a path to a sentencepiece .model file or a WordPiece vocab.txt")
        if self.vocab_size < 0:
            raise ConfigError(f"data.vocab_size={self.vocab_size} is negative: use 0 for the "
                              "default or a positive size")
        if self.vocab_size and self.tokenizer == "char":
            raise ConfigError(f"data.vocab_size={self.vocab_size} does not apply to "
                              "data.tokenizer=char (its vocabulary is the corpus's characters): "
                              "leave it at 0, or use tokenizer=bpe or unigram")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} must lie strictly between "
                              "0 and 1 (nanoGPT holds out 0.1)")
        if self.prefetch < 0:
            raise ConfigError(f"data.prefetch={self.prefetch} is negative: use 0 (none) or a "
                              "number of batches")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"data.seed={self.seed} must be in [0, 2**32)")

    @property
    def trained_vocab_size(self) -> int:
        """The vocabulary size to train a sentencepiece or WordPiece model with."""
        return self.vocab_size or 1024
