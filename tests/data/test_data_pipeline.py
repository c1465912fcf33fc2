"""Grain pipelines: nanoGPT's split, random windows, packed documents, resumable iterators,
per-process shards and fixed evaluation batches. References: nanoGPT's published split sizes,
substring search in the raw text, and a naive re-cutting of the documents."""

import json
from collections import Counter

import grain
import numpy as np
import pytest

from jaxformer.data import (DataConfig, build_tokenizer, eval_batches, load_corpus,
                            make_train_iterator)
from jaxformer.data.corpus import Corpus
from jaxformer.data.splits import split_stream
from jaxformer.errors import ConfigError, UserError
from jaxformer.presets import checked_merge

from support.chi_square import ALPHA, chi_square, power, ten_percent_biases

KEYS = {"tokens": np.int32, "targets": np.int32, "positions": np.int32,
        "segment_ids": np.int32, "loss_mask": np.float32}


@pytest.fixture(scope="module")
def shakespeare():
    return load_corpus("tinyshakespeare")


@pytest.fixture(scope="module")
def char(shakespeare):
    return build_tokenizer(DataConfig(), shakespeare)


@pytest.fixture(scope="module")
def speeches(shakespeare):
    """A corpus of documents: the first 400 speeches (blank-line separated), 2 to ~900 chars."""
    return Corpus("speeches", [d for d in shakespeare.text.split("\n\n") if d][:400])


def check_layout(batch, rows, seq_len):
    assert set(batch) == set(KEYS)
    for key, dtype in KEYS.items():
        assert batch[key].shape == (rows, seq_len) and batch[key].dtype == dtype, key


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


# --- split -------------------------------------------------------------------------------------

def test_split_is_nanogpts(shakespeare, char):
    # nanoGPT data/shakespeare_char/prepare.py: "train has 1,003,854 tokens, val has 111,540".
    config = DataConfig()
    train = split_stream(config, char, shakespeare, "train")
    val = split_stream(config, char, shakespeare, "val")
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert char.decode(train) == shakespeare.text[:1_003_854]
    assert char.decode(val) == shakespeare.text[1_003_854:]


def test_document_split_keeps_whole_documents(speeches):
    config = DataConfig(corpus="speeches")
    tokenizer = build_tokenizer(config, speeches)
    train = split_stream(config, tokenizer, speeches, "train")
    val = split_stream(config, tokenizer, speeches, "val")
    eos = tokenizer.eos_id
    assert np.count_nonzero(train == eos) == 360 and np.count_nonzero(val == eos) == 40
    assert tokenizer.decode(val) == "".join(speeches.documents[360:])


# --- windows -----------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val"])
def test_windows_are_shifted_text_from_the_right_split(shakespeare, char, split):
    config, seq_len = DataConfig(), 64
    if split == "train":
        batches = take(make_train_iterator(config, char, shakespeare, batch_size=12,
                                           seq_len=seq_len, process_index=0, process_count=1), 3)
        source = shakespeare.text[:1_003_854]
    else:
        batches = eval_batches(config, char, shakespeare, batch_size=12, seq_len=seq_len,
                               num_batches=3, process_index=0, process_count=1)
        source = shakespeare.text[1_003_854:]
    for batch in batches:
        check_layout(batch, 12, seq_len)
        np.testing.assert_array_equal(batch["targets"][:, :-1], batch["tokens"][:, 1:])
        np.testing.assert_array_equal(batch["positions"], np.tile(np.arange(seq_len), (12, 1)))
        assert (batch["segment_ids"] == 1).all() and (batch["loss_mask"] == 1).all()
        for tokens, targets in zip(batch["tokens"], batch["targets"]):
            window = char.decode(tokens) + char.decode(targets[-1:])
            assert window in source


def locate(stream: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Where each row of `rows` [n, L] occurs in `stream` (its first occurrence): every window
    of the stream is hashed, the rows looked up among the hashes, and each match verified."""
    length, count = rows.shape[1], len(stream) - rows.shape[1] + 1
    base = np.uint64(1_000_003)
    hashes, row_hashes = np.zeros(count, np.uint64), np.zeros(len(rows), np.uint64)
    for j in range(length):  # polynomial hashes, wrapping modulo 2**64
        hashes = hashes * base + stream[j:j + count].astype(np.uint64)
        row_hashes = row_hashes * base + rows[:, j].astype(np.uint64)
    order = np.argsort(hashes, kind="stable")
    starts = order[np.minimum(np.searchsorted(hashes[order], row_hashes), count - 1)]
    assert (stream[starts[:, None] + np.arange(length)] == rows).all(), "a row is not in the split"
    return starts


def test_windows_spread_over_the_split(shakespeare, char):
    """Window starts are uniform over the split: chi-square over 10 equal bins of 131,072 starts.
    Power: a sampler that puts 10% more or 10% less than its share in any one bin is rejected
    with probability > 1 - 1e-6 (noncentral chi-square, tests/support/chi_square.py), and at this seed
    every one of those 20 alternatives is rejected; a uniform sampler passes with probability
    1 - 1e-3."""
    batches = take(make_train_iterator(DataConfig(), char, shakespeare, batch_size=1024,
                                       seq_len=32, process_index=0, process_count=1), 128)
    stream = split_stream(DataConfig(), char, shakespeare, "train")
    rows = np.concatenate([np.concatenate([b["tokens"], b["targets"][:, -1:]], 1) for b in batches])
    starts = locate(stream, rows)
    counts = np.histogram(starts, bins=10, range=(0, len(stream) - 32))[0]
    uniform = np.full(10, 0.1)
    assert chi_square(counts, uniform) > ALPHA
    for _, _, biased in ten_percent_biases(uniform):
        assert power(uniform, biased, len(starts)) > 1 - 1e-6
        assert chi_square(counts, biased) < ALPHA


def test_seeds_change_the_windows(shakespeare, char):
    def first(config, seed):
        it = make_train_iterator(config, char, shakespeare, batch_size=4, seq_len=16, seed=seed,
                                 process_index=0, process_count=1)
        return next(it)["tokens"]
    base = first(DataConfig(), 0)
    np.testing.assert_array_equal(base, first(DataConfig(), 0))
    assert not np.array_equal(base, first(DataConfig(), 1))
    assert not np.array_equal(base, first(DataConfig(seed=1), 0))


# --- packing -----------------------------------------------------------------------------------

def reference_pieces(token_docs, piece_len, *, unique=False):
    """Naive re-cutting: each document in overlapping pieces of `piece_len` tokens. With
    `unique`, only the pieces that occur once (short tails like ".\n<eos>" recur)."""
    pieces = []
    for doc in token_docs:
        doc = list(doc)
        start = 0
        while start + 1 < len(doc):
            pieces.append(tuple(doc[start:start + piece_len]))
            start += piece_len - 1
    counts = Counter(pieces)
    return {p for p, n in counts.items() if n == 1 or not unique}


def unpack(batch):
    """Rebuild the pieces of every row from segment ids, checking positions and the loss mask."""
    pieces = []
    seq_len = batch["tokens"].shape[1]
    for r in range(batch["tokens"].shape[0]):
        segments = batch["segment_ids"][r]
        assert (batch["loss_mask"][r][segments == 0] == 0).all()
        ids = [s for s in np.unique(segments) if s]
        assert ids == list(range(1, len(ids) + 1))
        for s in ids:
            where = np.flatnonzero(segments == s)
            assert (np.diff(where) == 1).all()  # contiguous
            np.testing.assert_array_equal(batch["positions"][r][where], np.arange(len(where)))
            tokens = batch["tokens"][r][where]
            targets = batch["targets"][r][where]
            np.testing.assert_array_equal(targets[:-1], tokens[1:])
            assert (batch["loss_mask"][r][where[:-1]] == 1).all()
            ends_inside = batch["loss_mask"][r][where[-1]] == 0
            if where[-1] < seq_len - 1:
                assert ends_inside  # the next token belongs to another piece or is padding
            pieces.append(tuple(tokens) if ends_inside else tuple(tokens) + (targets[-1],))
    return pieces


def test_packed_rows_rebuild_the_documents(speeches):
    config, seq_len = DataConfig(corpus="speeches"), 64
    tokenizer = build_tokenizer(config, speeches)
    train_docs = [list(tokenizer.encode(d)) + [tokenizer.eos_id] for d in speeches.documents[:360]]
    expected = reference_pieces(train_docs, seq_len + 1)
    iterator = make_train_iterator(config, tokenizer, speeches, batch_size=8, seq_len=seq_len,
                                   process_index=0, process_count=1)
    seen = set()
    for batch in take(iterator, 150):  # > one epoch of pieces
        check_layout(batch, 8, seq_len)
        for piece in unpack(batch):
            assert piece in expected
            seen.add(piece)
    assert seen == expected
    # Short documents come back whole, eos included.
    whole = {tuple(d) for d in train_docs if len(d) <= seq_len + 1}
    assert whole and whole <= seen


def test_packing_is_auto_for_documents_and_fills_rows(speeches):
    config = DataConfig(corpus="speeches")
    tokenizer = build_tokenizer(config, speeches)
    batch = eval_batches(config, tokenizer, speeches, batch_size=16, seq_len=128, num_batches=1,
                         process_index=0, process_count=1)[0]
    assert batch["segment_ids"].max() > 1  # several documents per row
    assert (batch["segment_ids"] > 0).mean() > 0.8
    windows = DataConfig(corpus="speeches", packing=False)
    batch = eval_batches(windows, tokenizer, speeches, batch_size=4, seq_len=128, num_batches=1,
                         process_index=0, process_count=1)[0]
    assert (batch["segment_ids"] == 1).all()


def test_single_text_can_be_packed(shakespeare, char):
    config = DataConfig(packing=True)
    batch = next(make_train_iterator(config, char, shakespeare, batch_size=4, seq_len=32,
                                     process_index=0, process_count=1))
    text = shakespeare.text[:1_003_854]
    for piece in unpack(batch):
        assert char.decode(list(piece)) in text


# --- resume, sharding, evaluation --------------------------------------------------------------

@pytest.mark.parametrize("packing, prefetch", [(False, 0), (True, 0), (True, 3)])
def test_resume_from_state_gives_the_same_batches(speeches, packing, prefetch):
    config = DataConfig(corpus="speeches", packing=packing, prefetch=prefetch)
    tokenizer = build_tokenizer(config, speeches)

    def fresh():
        return make_train_iterator(config, tokenizer, speeches, batch_size=4, seq_len=32, seed=3,
                                   process_index=0, process_count=1)
    iterator = fresh()
    take(iterator, 7)
    state = json.loads(json.dumps(iterator.get_state()))  # what a checkpoint holds
    expected = take(iterator, 5)
    resumed = fresh()
    resumed.set_state(state)
    assert_same_batches(take(resumed, 5), expected)
    iterator.close()
    resumed.close()


def test_iterator_checkpoints_with_orbax(tmp_path, shakespeare, char):
    import orbax.checkpoint as ocp

    def fresh():
        return make_train_iterator(DataConfig(), char, shakespeare, batch_size=4, seq_len=16,
                                   process_index=0, process_count=1)
    iterator = fresh()
    take(iterator, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    expected = take(iterator, 3)
    resumed = fresh()
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(3, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(resumed)))
    assert_same_batches(take(resumed, 3), expected)


def test_window_shards_split_the_global_batch(shakespeare, char):
    def batches(index, count):
        return take(make_train_iterator(DataConfig(), char, shakespeare, batch_size=8, seq_len=16,
                                        process_index=index, process_count=count), 3)
    whole = batches(0, 1)
    parts = [batches(i, 4) for i in range(4)]
    for step, batch in enumerate(whole):
        for key in KEYS:
            np.testing.assert_array_equal(
                np.concatenate([part[step][key] for part in parts]), batch[key])
    with pytest.raises(UserError, match="multiple of the number of processes"):
        batches(0, 3)


def test_packed_shards_are_disjoint_and_cover_the_documents(speeches):
    config, seq_len = DataConfig(corpus="speeches"), 64
    tokenizer = build_tokenizer(config, speeches)
    train_docs = [list(tokenizer.encode(d)) + [tokenizer.eos_id] for d in speeches.documents[:360]]
    seen = []
    for index in range(2):
        iterator = make_train_iterator(config, tokenizer, speeches, batch_size=8, seq_len=seq_len,
                                       process_index=index, process_count=2)
        seen.append({piece for batch in take(iterator, 150) for piece in unpack(batch)})
    assert not seen[0] & seen[1] & reference_pieces(train_docs, seq_len + 1, unique=True)
    assert seen[0] | seen[1] == reference_pieces(train_docs, seq_len + 1)


@pytest.mark.parametrize("corpus_name", ["shakespeare", "speeches"])
def test_eval_batches_are_fixed(request, corpus_name):
    corpus = request.getfixturevalue(corpus_name)
    config = DataConfig(corpus=corpus_name)
    tokenizer = build_tokenizer(config, corpus)
    kwargs = dict(batch_size=4, seq_len=32, num_batches=5, process_index=0, process_count=1)
    first = eval_batches(config, tokenizer, corpus, **kwargs)
    assert_same_batches(eval_batches(config, tokenizer, corpus, **kwargs), first)
    train = eval_batches(config, tokenizer, corpus, split="train", **kwargs)
    assert not np.array_equal(train[0]["tokens"], first[0]["tokens"])


def test_user_errors(shakespeare, char):
    tiny = Corpus("tiny", ["To be, or not to be: that is the question."])
    tokenizer = build_tokenizer(DataConfig(corpus="tiny"), tiny)
    with pytest.raises(UserError, match="fewer than seq_len"):
        make_train_iterator(DataConfig(corpus="tiny"), tokenizer, tiny, batch_size=2,
                            seq_len=64, process_index=0, process_count=1)


def test_config_merges_through_omegaconf():
    config = checked_merge(DataConfig, {"packing": None, "tokenizer": "bpe", "vocab_size": 512},
                           prefix="data.")
    assert config == DataConfig(tokenizer="bpe", vocab_size=512)
    with pytest.raises(ConfigError, match="data.val_fraction"):
        checked_merge(DataConfig, {"val_fraction": 2.0}, prefix="data.")
    with pytest.raises(ConfigError, match="did you mean data.packing"):
        checked_merge(DataConfig, {"pack": True}, prefix="data.")
