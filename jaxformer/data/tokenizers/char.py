"""Character-level tokenizer: the vocabulary is the sorted set of the corpus's characters, as in
nanoGPT's shakespeare_char (65 characters for Tiny Shakespeare, "\\n" first)."""

import json
from pathlib import Path

import numpy as np

from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.errors import UserError

FILENAME = "tokenizer.json"
EOS_PIECE = "<eos>"


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class CharTokenizer(Tokenizer):
    """Id i is the i-th character in code-point order. With `eos=True` one more id,
    `len(chars)`, marks the end of a document (needed only for corpora of several documents)."""

    def __init__(self, chars: str | list[str], *, eos: bool = False):
        chars = "".join(chars)
        if list(chars) != sorted(set(chars)):
            raise ValueError("chars must be distinct and sorted by code point")
        if not chars:
            raise UserError("the corpus is empty: a character vocabulary needs some text")
        self.chars = chars
        self._codes = _code_points(chars)  # sorted, so searchsorted finds ids
        self.eos_id = len(chars) if eos else None

    @classmethod
    def from_texts(cls, texts, *, eos: bool = False) -> "CharTokenizer":
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen), eos=eos)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + (self.eos_id is not None)

    @property
    def fingerprint(self) -> str:
        return f"char:{self.eos_id is not None}:{self.chars}"

    def encode_array(self, text: str) -> np.ndarray:
        codes = _code_points(text)
        ids = np.searchsorted(self._codes, codes)
        found = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        if not found.all():
            unknown = [chr(c) for c in np.unique(codes[~found]).tolist()]
            shown = ", ".join(repr(c) for c in unknown[:20])
            more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            raise UserError(f"text has characters outside the tokenizer's vocabulary: "
                            f"{shown}{more} (the character vocabulary comes from the training "
                            "corpus: remove them or retrain with a corpus that has them)")
        return ids.astype(np.int32)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids) -> str:
        ids = [i for i in np.asarray(ids).ravel().tolist() if i != self.eos_id]
        return "".join(self.pieces(ids))

    def pieces(self, ids) -> list[str]:
        out = []
        for i in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if i == self.eos_id:
                out.append(EOS_PIECE)
            elif 0 <= i < len(self.chars):
                out.append(self.chars[i])
            else:
                raise ValueError(f"id {i} is outside the vocabulary [0, {self.vocab_size})")
        return out

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"type": "char", "chars": list(self.chars), "eos": self.eos_id is not None}
        path.write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            if payload.get("type") != "char":
                raise ValueError(f"type is {payload.get('type')!r}, not 'char'")
            return cls(payload["chars"], eos=bool(payload.get("eos", False)))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not a valid character tokenizer file ({e}): save it "
                            "again with CharTokenizer.save") from None
