"""Data: corpora, tokenizers and grain pipelines that turn text into training batches."""

from jaxformer.data.config import DataConfig
from jaxformer.data.corpus import Corpus, load_corpus
from jaxformer.data.pipeline import eval_batches, make_train_iterator
from jaxformer.data.splits import encode_corpus, split_tokens
from jaxformer.data.tokenizers import (CharTokenizer, SentencePieceTokenizer, Tokenizer,
                                       WordPieceTokenizer, build_tokenizer, load_tokenizer)

__all__ = ["CharTokenizer", "Corpus", "DataConfig", "SentencePieceTokenizer", "Tokenizer",
           "WordPieceTokenizer", "build_tokenizer", "encode_corpus", "eval_batches",
           "load_corpus", "load_tokenizer", "make_train_iterator", "split_tokens"]
