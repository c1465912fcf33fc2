"""Corpus -> token arrays -> train / validation split, as nanoGPT splits: the first
(1 - val_fraction) of a single text's token stream trains, the rest validates; a corpus of several
documents is split by whole documents (the first 90% of the files train)."""

import numpy as np

from jaxformer.data.config import DataConfig
from jaxformer.data.corpus import Corpus
from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.errors import UserError

SPLITS = ("train", "val")


def encode_corpus(tokenizer: Tokenizer, corpus: Corpus) -> list[np.ndarray]:
    """One int32 token array per document, cached on the corpus per tokenizer."""
    key = tokenizer.fingerprint
    if key not in corpus.cache:
        corpus.cache[key] = [tokenizer.encode_array(doc) for doc in corpus.documents]
    return corpus.cache[key]


def split_index(n: int, val_fraction: float) -> int:
    """How many of `n` items train: nanoGPT's `int(n * 0.9)` for val_fraction 0.1."""
    return int(n * (1.0 - val_fraction))


def split_tokens(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the first `split_index` tokens and the rest."""
    cut = split_index(len(tokens), val_fraction)
    return tokens[:cut], tokens[cut:]


def split_documents(documents: list, val_fraction: float) -> tuple[list, list]:
    """(train, val) by whole documents; each side keeps at least one document."""
    if len(documents) < 2:
        raise ValueError("splitting by documents needs at least two documents")
    cut = min(max(split_index(len(documents), val_fraction), 1), len(documents) - 1)
    return documents[:cut], documents[cut:]


def use_packing(config: DataConfig, corpus: Corpus) -> bool:
    """Pack documents for a corpus of several documents, cut windows from a single text,
    unless `config.packing` says otherwise."""
    return config.packing if config.packing is not None else not corpus.is_single_text


def split_documents_tokens(config: DataConfig, tokenizer: Tokenizer, corpus: Corpus,
                           split: str) -> list[np.ndarray]:
    """The token arrays of `split`'s documents. Documents of a multi-document corpus end with
    `tokenizer.eos_id` (when it has one); a single text is cut by tokens, without one."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    documents = encode_corpus(tokenizer, corpus)
    if len(documents) == 1:
        train, val = split_tokens(documents[0], config.val_fraction)
        return [train] if split == "train" else [val]
    train, val = split_documents(documents, config.val_fraction)
    chosen = train if split == "train" else val
    if tokenizer.eos_id is None:
        return chosen
    eos = np.asarray([tokenizer.eos_id], dtype=np.int32)
    return [np.concatenate([doc, eos]) for doc in chosen]


def split_stream(config: DataConfig, tokenizer: Tokenizer, corpus: Corpus,
                 split: str) -> np.ndarray:
    """`split` as one int32 token stream (documents joined, each ending in eos)."""
    parts = split_documents_tokens(config, tokenizer, corpus, split)
    stream = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return np.ascontiguousarray(stream, dtype=np.int32)


def check_enough(num_tokens: int, seq_len: int, split: str, corpus: Corpus) -> None:
    if num_tokens < seq_len + 1:
        raise UserError(f"the {split} split of corpus {corpus.name} has {num_tokens} tokens, fewer "
                        f"than seq_len + 1 = {seq_len + 1}: use a shorter sequence length, a "
                        "bigger corpus, or another data.val_fraction")
