"""Sentencepiece tokenizer: a BPE or unigram model trained in-process from the corpus, or loaded
from a `.model` file. Saved with a run as the model's own protobuf bytes (`tokenizer.model`)."""

import hashlib
import io
from pathlib import Path

import numpy as np
import sentencepiece

from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.errors import UserError

FILENAME = "tokenizer.model"

# Ids of the special pieces in models we train (pad 0 so that zero padding is the pad token).
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class SentencePieceTokenizer(Tokenizer):
    """Wraps a `sentencepiece.SentencePieceProcessor` built from serialized model bytes."""

    def __init__(self, model_proto: bytes):
        self.model_proto = bytes(model_proto)
        self.processor = sentencepiece.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(self.model_proto)
        except (RuntimeError, OSError) as e:
            raise UserError(f"not a valid sentencepiece model ({e}): give a .model file written "
                            "by sentencepiece") from None
        self.eos_id = self.processor.eos_id() if self.processor.eos_id() >= 0 else None
        self.pad_id = self.processor.pad_id() if self.processor.pad_id() >= 0 else None

    @classmethod
    def train(cls, texts, *, model_type: str, vocab_size: int) -> "SentencePieceTokenizer":
        """Train on `texts` (documents). Lines are the training sentences; "\\n" is a piece of its
        own and normalization is off, so `decode(encode(t)) == t` for text made of seen chars."""
        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type {model_type!r} is not 'bpe' or 'unigram'")
        sentences = (line for text in texts for line in text.split("\n") if line)
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=sentences, model_writer=model, model_type=model_type,
                vocab_size=vocab_size, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                user_defined_symbols=["\n"], character_coverage=1.0,
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=False, max_sentence_length=1 << 16,
                # Unigram on small corpora cannot always reach the exact size.
                hard_vocab_limit=model_type == "bpe",
                num_threads=1,  # deterministic: the same corpus gives the same model
                minloglevel=2)
        except RuntimeError as e:
            raise UserError(f"sentencepiece could not train a {model_type} vocabulary of "
                            f"{vocab_size}: {str(e).strip().splitlines()[-1]} (choose another "
                            "data.vocab_size)") from None
        return cls(model.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "SentencePieceTokenizer":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"sentencepiece model {path} does not exist: check the path")
        return cls(path.read_bytes())

    @property
    def vocab_size(self) -> int:
        return self.processor.vocab_size()

    @property
    def fingerprint(self) -> str:
        return "spm:" + hashlib.sha256(self.model_proto).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text, out_type=int)

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int32)

    def decode(self, ids) -> str:
        return self.processor.decode(np.asarray(ids, dtype=np.int64).ravel().tolist())

    def pieces(self, ids) -> list[str]:
        ids = np.asarray(ids, dtype=np.int64).ravel().tolist()
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        return [self.processor.id_to_piece(i) for i in ids]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.model_proto)
        return path
