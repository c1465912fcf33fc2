"""Tokenizers: character level and sentencepiece, built from a `DataConfig` or loaded from a run."""

from pathlib import Path

from jaxformer.data.config import DataConfig
from jaxformer.data.corpus import Corpus
from jaxformer.data.tokenizers import char, spm, wordpiece
from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.data.tokenizers.char import CharTokenizer
from jaxformer.data.tokenizers.spm import SentencePieceTokenizer
from jaxformer.data.tokenizers.wordpiece import WordPieceTokenizer
from jaxformer.errors import UserError

__all__ = ["CharTokenizer", "SentencePieceTokenizer", "Tokenizer", "WordPieceTokenizer",
           "build_tokenizer", "load_tokenizer", "saved_tokenizer_exists"]


def build_tokenizer(config: DataConfig, corpus: Corpus | None) -> Tokenizer:
    """The tokenizer `config.tokenizer` names, built from (or checked against) `corpus`.

    A character vocabulary gets an end-of-document token only for corpora of several
    documents, so Tiny Shakespeare keeps nanoGPT's 65 ids. `corpus` may be None only when
    loading a `.model` file."""
    if corpus is None and config.tokenizer in ("char", "bpe", "unigram", "wordpiece"):
        raise ValueError(f"tokenizer {config.tokenizer!r} is built from a corpus: pass one")
    if config.tokenizer == "char":
        return CharTokenizer.from_texts(corpus.documents, eos=not corpus.is_single_text)
    if config.tokenizer in ("bpe", "unigram"):
        return SentencePieceTokenizer.train(corpus.documents, model_type=config.tokenizer,
                                            vocab_size=config.trained_vocab_size)
    if config.tokenizer == "wordpiece":
        return WordPieceTokenizer.train(corpus.documents, vocab_size=config.trained_vocab_size)
    path = Path(config.tokenizer).expanduser()
    tokenizer = (SentencePieceTokenizer.load(path) if path.suffix == ".model"
                 else WordPieceTokenizer.load(path))
    if config.vocab_size and config.vocab_size != tokenizer.vocab_size:
        raise UserError(f"data.vocab_size={config.vocab_size} but {config.tokenizer} has "
                        f"{tokenizer.vocab_size} pieces: set data.vocab_size=0 or "
                        f"{tokenizer.vocab_size}")
    return tokenizer


def saved_tokenizer_exists(directory: str | Path) -> bool:
    directory = Path(directory)
    return any((directory / name).is_file()
               for name in (char.FILENAME, spm.FILENAME, wordpiece.FILENAME))


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer saved in `directory` by `Tokenizer.save` (a run directory)."""
    directory = Path(directory)
    if (directory / char.FILENAME).is_file():
        return CharTokenizer.load(directory / char.FILENAME)
    if (directory / spm.FILENAME).is_file():
        return SentencePieceTokenizer.load(directory / spm.FILENAME)
    if (directory / wordpiece.FILENAME).is_file():
        return WordPieceTokenizer.load(directory)
    raise UserError(f"no saved tokenizer in {directory} (expected {char.FILENAME}, "
                    f"{spm.FILENAME} or {wordpiece.FILENAME}): give a run directory written by "
                    f"`jaxformer train`")
