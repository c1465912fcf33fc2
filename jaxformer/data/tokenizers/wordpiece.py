"""WordPiece, BERT's tokenizer: trained in-process with HF `tokenizers`, or a published `vocab.txt`.

Text is normalised and split into words as BERT does (`BertNormalizer`: clean-up, lowercase and
accent stripping when `lowercase`; `BertPreTokenizer`: whitespace and punctuation), then each word
is cut greedily into the longest pieces in the vocabulary, continuation pieces spelled `##piece`
(HF `tokenizers`' WordPiece model). A word that cannot be cut becomes `[UNK]`.

Training: `tokenizers`' own WordPieceTrainer numbers its `##` pieces in hash-map order, so two runs
on the same text may differ (huggingface/tokenizers#1794). The same algorithm, frequency-driven
merges, is run here through its BpeTrainer with every word marked by a leading "▁" instead: all
ids then come from the sorted alphabet and the merges, and the result is the same on every run.
Pieces that start with "▁" begin a word; the others become `##` pieces; every character of the
alphabet is kept in both forms, so any word of seen characters can be cut.

Saved as `vocab.txt` (one piece per line, the id is the line number) and `tokenizer_config.json`
(`do_lower_case`), the files transformers' BertTokenizer reads.
"""

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.errors import UserError

FILENAME = "vocab.txt"
CONFIG_FILENAME = "tokenizer_config.json"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORD_START = "\u2581"


def _backend(vocab: list[str], lowercase: bool):
    # HF's tokenizers package loads on first use: only WordPiece (BERT) runs need it.
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    tok = HFTokenizer(models.WordPiece({piece: i for i, piece in enumerate(vocab)},
                                       unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    # Matched in the raw text before normalisation, so "[MASK]" in a prompt is one token.
    tok.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
    return tok


class WordPieceTokenizer(Tokenizer):
    """`vocab`: the pieces in id order; it must hold the five special tokens."""

    def __init__(self, vocab: list[str], *, lowercase: bool = True, source: str = "vocabulary"):
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise UserError(f"{source} has no {', '.join(missing)} token: a BERT vocabulary needs "
                            f"{', '.join(SPECIAL_TOKENS)} (add the missing lines to vocab.txt)")
        if len(set(vocab)) != len(vocab):
            duplicate = next(p for i, p in enumerate(vocab) if p in vocab[:i])
            raise UserError(f"{source} lists {duplicate!r} twice: each piece must be on one line")
        self.vocab, self.lowercase = list(vocab), lowercase
        self.ids = {piece: i for i, piece in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self.ids[t] for t in SPECIAL_TOKENS)
        self.eos_id = None
        self.special_ids = frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id,
                                      self.mask_id))
        self._tok = _backend(self.vocab, lowercase)

    # --- building ---

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int, lowercase: bool = True
              ) -> "WordPieceTokenizer":
        """A vocabulary of at most `vocab_size` pieces (special tokens included) from `texts`."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, normalizers, pre_tokenizers, trainers

        normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        splitter = pre_tokenizers.BertPreTokenizer()
        lines, alphabet = [], set()
        for text in texts:
            for line in text.split("\n"):
                words = [w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line))]
                alphabet.update(*words)
                lines.append(" ".join(WORD_START + w for w in words))
        alphabet = sorted(alphabet)
        budget = vocab_size - len(SPECIAL_TOKENS) - len(alphabet)
        if budget <= 2 * len(alphabet):
            raise UserError(f"data.vocab_size={vocab_size} is too small for a corpus of "
                            f"{len(alphabet)} distinct characters: use at least "
                            f"{len(SPECIAL_TOKENS) + 4 * len(alphabet)}")
        bpe = HFTokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=budget, show_progress=False))
        trained = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
        vocab = list(SPECIAL_TOKENS) + alphabet  # every character can start a word
        for piece, _ in trained:
            if piece == WORD_START:
                continue
            vocab.append(piece[1:] if piece.startswith(WORD_START) else "##" + piece)
        return cls(list(dict.fromkeys(vocab)), lowercase=lowercase, source="the trained vocabulary")

    @classmethod
    def load(cls, path: str | Path) -> "WordPieceTokenizer":
        """A `vocab.txt`, or a directory holding one (with `tokenizer_config.json`'s
        `do_lower_case`, default true: the uncased BERT models)."""
        path = Path(path).expanduser()
        directory, file = (path, path / FILENAME) if path.is_dir() else (path.parent, path)
        if not file.is_file():
            raise UserError(f"no WordPiece vocabulary at {file}: give a vocab.txt (one piece per "
                            f"line) or a directory holding one")
        try:
            vocab = file.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError:
            raise UserError(f"{file} is not UTF-8 text: a vocab.txt holds one piece per line") from None
        if vocab and vocab[-1] == "":
            vocab.pop()  # the final newline
        lowercase = True
        config = directory / CONFIG_FILENAME
        if config.is_file():
            try:
                lowercase = bool(json.loads(config.read_text()).get("do_lower_case", True))
            except (json.JSONDecodeError, AttributeError):
                raise UserError(f"{config} is not a JSON object: fix or remove it") from None
        return cls(vocab, lowercase=lowercase, source=str(file))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / FILENAME
        path.write_text("".join(piece + "\n" for piece in self.vocab), encoding="utf-8")
        (directory / CONFIG_FILENAME).write_text(json.dumps(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
             "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
             "cls_token": "[CLS]", "mask_token": "[MASK]"}, indent=2) + "\n")
        return path

    # --- the Tokenizer interface ---

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256("\n".join(self.vocab).encode()).hexdigest()
        return f"wordpiece:{self.lowercase}:{digest}"

    def encode(self, text: str) -> list[int]:
        """The pieces of `text`, without [CLS] / [SEP] (see `encode_pair`)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_words(self, words: list[str]) -> tuple[list[int], list[int]]:
        """Pieces of already split words, and the index of the word each piece belongs to."""
        encoding = self._tok.encode(list(words), is_pretokenized=True, add_special_tokens=False)
        return encoding.ids, encoding.word_ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Pieces of `text` and each one's (start, end) character span in `text`."""
        encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def decode(self, ids) -> str:
        """Text with the continuation pieces joined; padding dropped, other special tokens kept."""
        ids = [int(i) for i in np.asarray(ids).ravel() if int(i) != self.pad_id]
        return self._tok.decode(ids, skip_special_tokens=False)

    def pieces(self, ids) -> list[str]:
        out = []
        for i in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"id {i} is outside the vocabulary [0, {len(self.vocab)})")
            out.append(self.vocab[i])
        return out

    def encode_pair(self, a: str, b: str | None = None) -> tuple[list[int], list[int]]:
        """BERT's input: ([CLS] a [SEP] (b [SEP]), token types 0 for a's part, 1 for b's)."""
        first = [self.cls_id] + self.encode(a) + [self.sep_id]
        second = [] if b is None else self.encode(b) + [self.sep_id]
        return first + second, [0] * len(first) + [1] * len(second)
