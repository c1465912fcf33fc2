"""The sentencepiece tokenizers of HF T5 and Marian directories, read without transformers.

- T5 (`spiece.model`): sentencepiece ids as they are, then `extra_ids` sentinels above them
  (<extra_id_0> is the highest id, as in HF's T5Tokenizer); `encode` appends </s>.
- Marian (`source.spm`, `target.spm`, `vocab.json`): sentencepiece splits the text into pieces,
  `vocab.json` numbers them (unknown pieces -> <unk>); `encode` appends </s>. HF's MarianTokenizer
  also runs the Moses punctuation normalizer when `sacremoses` is installed; this one does not.

Both offer jaxformer's tokenizer interface (encode, decode, pieces, vocab_size, eos_id, pad_id).
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import sentencepiece

from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.errors import UserError

UNDERLINE = "\u2581"


def _processor(path: Path) -> sentencepiece.SentencePieceProcessor:
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(path.read_bytes())
    except (RuntimeError, OSError) as e:
        raise UserError(f"{path} is not a sentencepiece model ({e})") from None
    return processor


def _ids(ids) -> list[int]:
    return [int(i) for i in np.asarray(ids).ravel()]


class T5Tokenizer(Tokenizer):
    FILE = "spiece.model"

    def __init__(self, path: str | Path, extra_ids: int = 100):
        self.path = Path(path)
        self.sp = _processor(self.path)
        self.extra_ids = extra_ids
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else None
        self.unk_id = self.sp.unk_id()

    @classmethod
    def from_dir(cls, directory: Path) -> "T5Tokenizer":
        extra = 100
        config = directory / "tokenizer_config.json"
        if config.is_file():
            extra = json.loads(config.read_text()).get("extra_ids", 100)
        return cls(directory / cls.FILE, extra)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size() + self.extra_ids

    @property
    def fingerprint(self) -> str:
        return f"t5:{self.extra_ids}:" + hashlib.sha256(self.path.read_bytes()).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int) + ([self.eos_id] if self.eos_id is not None else [])

    def piece(self, i: int) -> str:
        if i >= self.sp.get_piece_size():
            return f"<extra_id_{self.vocab_size - 1 - i}>"
        return self.sp.id_to_piece(i)

    def pieces(self, ids) -> list[str]:
        return [self.piece(i) for i in _ids(ids)]

    def decode(self, ids) -> str:
        """Text without pad, </s> and <unk> (as HF's decode(skip_special_tokens=True));
        sentinels shown as <extra_id_N>."""
        out, run = [], []
        for i in _ids(ids):
            if i in (self.pad_id, self.eos_id, self.unk_id):
                continue
            if i >= self.sp.get_piece_size():
                out.append(self.sp.decode(run))
                out.append(self.piece(i))
                run = []
            else:
                run.append(i)
        out.append(self.sp.decode(run))
        return " ".join(part for part in out if part)

    def save(self, directory: str | Path) -> Path:
        target = Path(directory) / self.FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, target)
        return target


class MarianTokenizer(Tokenizer):
    FILES = ("source.spm", "target.spm", "vocab.json")

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.source = _processor(self.directory / "source.spm")
        self.target = _processor(self.directory / "target.spm")
        try:
            self.vocab = json.loads((self.directory / "vocab.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read {self.directory / 'vocab.json'}: {e}") from None
        if "<unk>" not in self.vocab:
            raise UserError(f"{self.directory / 'vocab.json'} has no <unk> entry")
        self.id_to_piece = {i: piece for piece, i in self.vocab.items()}
        self.eos_id = self.vocab.get("</s>")
        self.pad_id = self.vocab.get("<pad>")
        self.special = {i for piece, i in self.vocab.items() if piece in ("</s>", "<pad>", "<unk>")}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in self.FILES:
            digest.update((self.directory / name).read_bytes())
        return "marian:" + digest.hexdigest()

    def encode(self, text: str) -> list[int]:
        unk = self.vocab["<unk>"]
        ids = [self.vocab.get(piece, unk) for piece in self.source.encode(text, out_type=str)]
        return ids + ([self.eos_id] if self.eos_id is not None else [])

    def pieces(self, ids) -> list[str]:
        return [self.id_to_piece.get(i, "<unk>") for i in _ids(ids)]

    def decode(self, ids) -> str:
        pieces = [self.id_to_piece.get(i, "<unk>") for i in _ids(ids) if i not in self.special]
        return self.target.decode_pieces(pieces).replace(UNDERLINE, " ").strip()

    def save(self, directory: str | Path) -> Path:
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        for name in self.FILES:
            shutil.copyfile(self.directory / name, target / name)
        return target / "vocab.json"


def sentencepiece_tokenizer(directory: str | Path) -> Tokenizer | None:
    """The T5 or Marian sentencepiece tokenizer saved in an HF directory, or None."""
    directory = Path(directory)
    if (directory / T5Tokenizer.FILE).is_file():
        return T5Tokenizer.from_dir(directory)
    if all((directory / name).is_file() for name in MarianTokenizer.FILES):
        return MarianTokenizer(directory)
    return None
