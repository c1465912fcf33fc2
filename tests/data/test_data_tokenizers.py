"""Tokenizers against independent references: nanoGPT's character vocabulary and ids, and for
trained sentencepiece models, encoders written here from the algorithms' definitions (BPE: merge
the best-scoring adjacent pair, leftmost first, until none is in the vocabulary; unigram: the
Viterbi path of highest total piece score), reading only the model's vocabulary table."""

import math
from pathlib import Path

import numpy as np
import pytest

from jaxformer.data import (CharTokenizer, DataConfig, SentencePieceTokenizer, build_tokenizer,
                            load_corpus, load_tokenizer)
from jaxformer.data.corpus import Corpus
from jaxformer.errors import ConfigError, UserError


@pytest.fixture(scope="module")
def shakespeare():
    return load_corpus("tinyshakespeare")


@pytest.fixture(scope="module")
def char_tokenizer(shakespeare):
    return build_tokenizer(DataConfig(), shakespeare)


def test_char_vocabulary_is_nanogpts(shakespeare, char_tokenizer):
    # nanoGPT data/shakespeare_char/prepare.py: chars = sorted(list(set(data))), 65 of them.
    assert len(shakespeare.text) == 1_115_394
    assert char_tokenizer.vocab_size == 65
    assert char_tokenizer.chars == "".join(sorted(set(shakespeare.text)))
    assert char_tokenizer.chars[:13] == "\n !$&',-.3:;?"
    assert char_tokenizer.eos_id is None  # a single text needs no end-of-document token
    # "Let's build GPT" (Karpathy): encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]
    assert char_tokenizer.encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]


def test_char_round_trip_and_pieces(shakespeare, char_tokenizer):
    text = shakespeare.text[:5000]
    ids = char_tokenizer.encode(text)
    assert ids == [char_tokenizer.chars.index(c) for c in text]  # naive lookup
    assert char_tokenizer.decode(ids) == text
    assert char_tokenizer.decode(np.asarray(ids)) == text
    assert "".join(char_tokenizer.pieces(ids)) == text
    full = char_tokenizer.encode_array(shakespeare.text)
    assert full.dtype == np.int32 and len(full) == len(shakespeare.text)


def test_char_unknown_characters_name_them(char_tokenizer):
    with pytest.raises(UserError, match=r"'é'.*'€'|'€'.*'é'") as info:
        char_tokenizer.encode("héllo €")
    assert "vocabulary" in str(info.value)


def test_char_save_load(tmp_path, char_tokenizer):
    path = char_tokenizer.save(tmp_path)
    assert path.name == "tokenizer.json" and path.read_text(encoding="utf-8").startswith("{")
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.chars == char_tokenizer.chars and loaded.eos_id is None
    assert loaded.encode("To be, or not") == char_tokenizer.encode("To be, or not")


def test_char_eos_for_document_corpora(tmp_path):
    corpus = Corpus("docs", ["ab", "ca"])
    tokenizer = build_tokenizer(DataConfig(corpus="docs"), corpus)
    assert tokenizer.chars == "abc" and tokenizer.eos_id == 3 and tokenizer.vocab_size == 4
    assert tokenizer.decode([0, 1, 3, 2]) == "abc"
    assert tokenizer.pieces([0, 3]) == ["a", "<eos>"]
    tokenizer.save(tmp_path)
    assert load_tokenizer(tmp_path).eos_id == 3


def test_corrupt_saved_tokenizer_is_a_user_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"type": "char", "chars": ["b", "a"]}')
    with pytest.raises(UserError, match="not a valid character tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="no saved tokenizer"):
        load_tokenizer(tmp_path / "missing")


def vocabulary(tokenizer) -> tuple[dict[str, tuple[int, float]], int]:
    """piece -> (id, score) for the ordinary pieces of a sentencepiece model, and the unknown id."""
    sp = tokenizer.processor
    table = {sp.id_to_piece(i): (i, sp.get_score(i)) for i in range(sp.get_piece_size())
             if not (sp.is_control(i) or sp.is_unknown(i))}
    return table, sp.unk_id()


def naive_bpe(text: str, table, unk: int) -> list[int]:
    symbols = list(text.replace(" ", "\u2581"))  # no normalization, no dummy prefix
    while True:
        best = None  # (score, index): the highest score, the leftmost on ties
        for k in range(len(symbols) - 1):
            merged = symbols[k] + symbols[k + 1]
            if merged in table and (best is None or table[merged][1] > best[0]):
                best = (table[merged][1], k)
        if best is None:
            return [table[s][0] if s in table else unk for s in symbols]
        k = best[1]
        symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]


def naive_unigram(text: str, table, unk: int) -> list[int]:
    s = text.replace(" ", "\u2581")
    longest = max(len(piece) for piece in table)
    unk_score = min(score for _, score in table.values()) - 10.0  # sentencepiece's unknown penalty
    best, back = [0.0] + [-math.inf] * len(s), [None] * (len(s) + 1)
    for end in range(1, len(s) + 1):
        for start in range(max(0, end - longest), end):
            piece = s[start:end]
            if piece in table:  # "\n" is a user-defined symbol: always taken whole
                i, score = table[piece][0], 0.0 if piece == "\n" else table[piece][1]
            elif end - start == 1:
                i, score = unk, unk_score
            else:
                continue
            if best[start] + score > best[end]:
                best[end], back[end] = best[start] + score, (start, i)
    ids, end = [], len(s)
    while end:
        end, i = back[end]
        ids.append(i)
    return ids[::-1]


@pytest.fixture(scope="module")
def slice_corpus(shakespeare):
    return Corpus("slice", [shakespeare.text[:100_000]])


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_trained_round_trip_and_save_load(tmp_path, slice_corpus, model_type):
    config = DataConfig(tokenizer=model_type, vocab_size=300)
    tokenizer = build_tokenizer(config, slice_corpus)
    assert isinstance(tokenizer, SentencePieceTokenizer)
    if model_type == "bpe":
        assert tokenizer.vocab_size == 300
    assert (tokenizer.pad_id, tokenizer.eos_id) == (0, 3)
    text = slice_corpus.text[50_000:52_000]  # several lines, runs of spaces, newlines
    ids = tokenizer.encode(text)
    assert len(ids) < len(text)  # merges happened
    assert tokenizer.decode(ids) == text
    # The pieces are the text split up, spaces shown as "▁".
    assert "".join(tokenizer.pieces(ids)).replace("▁", " ") == text
    # The same ids from the algorithm written out above, also with a character never seen.
    table, unk = vocabulary(tokenizer)
    naive = naive_bpe if model_type == "bpe" else naive_unigram
    assert naive(text, table, unk) == ids
    assert naive(text[:300] + "\u00a7" + text[300:600], table, unk) == tokenizer.encode(
        text[:300] + "\u00a7" + text[300:600])
    # ... and after a save / load round trip.
    path = tokenizer.save(tmp_path)
    assert path.name == "tokenizer.model"
    assert load_tokenizer(tmp_path).encode(text) == ids
    by_path = build_tokenizer(DataConfig(tokenizer=str(path)), None)
    assert by_path.encode(text) == ids


def test_sentencepiece_training_is_deterministic(slice_corpus):
    config = DataConfig(tokenizer="bpe", vocab_size=200)
    a = build_tokenizer(config, slice_corpus)
    b = build_tokenizer(config, slice_corpus)
    assert a.model_proto == b.model_proto


def test_sentencepiece_errors(tmp_path, slice_corpus):
    with pytest.raises(UserError, match="could not train"):
        build_tokenizer(DataConfig(tokenizer="bpe", vocab_size=100_000), slice_corpus)
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a valid sentencepiece model"):
        build_tokenizer(DataConfig(tokenizer=str(bad)), None)
    with pytest.raises(UserError, match="does not exist"):
        build_tokenizer(DataConfig(tokenizer=str(tmp_path / "missing.model")), None)


def test_vocab_size_mismatch_with_model_file(tmp_path, slice_corpus):
    tokenizer = build_tokenizer(DataConfig(tokenizer="bpe", vocab_size=200), slice_corpus)
    path = tokenizer.save(tmp_path)
    with pytest.raises(UserError, match="has 200 pieces"):
        build_tokenizer(DataConfig(tokenizer=str(path), vocab_size=300), None)


def test_config_validation():
    with pytest.raises(ConfigError, match="data.tokenizer"):
        DataConfig(tokenizer="sentencepiece-ish")
    with pytest.raises(ConfigError, match="does not apply"):
        DataConfig(vocab_size=100)
    with pytest.raises(ConfigError, match="val_fraction"):
        DataConfig(val_fraction=1.0)
    with pytest.raises(ConfigError, match="negative"):
        DataConfig(tokenizer="bpe", vocab_size=-1)
    with pytest.raises(ConfigError, match="data.prefetch"):
        DataConfig(prefetch=-1)
    assert DataConfig(tokenizer="bpe").trained_vocab_size == 1024
    assert Path(DataConfig(tokenizer="m/x.model").tokenizer).suffix == ".model"
