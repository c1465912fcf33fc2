"""Seq2seq data and objective against references: T5 span corruption (T5's published lengths, the
original text rebuilt from inputs and targets), addition problems (held-out ones never trained on),
pair batches (padded and packed, against a layout written out here), label smoothing against
optax, and the 2017 learning-rate schedule against the paper's formula."""

import grain
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer.config import OptimizerConfig
from jaxformer.data.pairs import pair_dataset
from jaxformer.data.sharding import ProcessShard
from jaxformer.data.span_corruption import SpanCorruption, corrupt, span_corruption_lengths
from jaxformer.data.synthetic import AdditionExamples, addition_problem, is_heldout
from jaxformer.tasks.seq2seq import smoothed_cross_entropy
from jaxformer.train.optimizer import make_schedule

VOCAB = 1000  # sentinels count down from 999


def test_span_corruption_lengths_are_t5s():
    """T5's random_spans_helper: 512 input tokens come from 568 raw tokens, with 114 targets."""
    assert span_corruption_lengths(512) == (568, 114)


def rebuild(inputs: np.ndarray, targets: np.ndarray, first_sentinel: int) -> list[int]:
    """The original piece: each sentinel in the inputs replaced by what follows the same sentinel
    in the targets, up to the next sentinel."""
    spans, current = {}, None
    for t in targets[:-1].tolist():
        if t > first_sentinel - 100:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs[:-1].tolist():
        out += spans[t] if t > first_sentinel - 100 else [t]
    return out


@pytest.mark.parametrize("length", [2, 7, 40, 568])
def test_corruption_rebuilds_the_text(length):
    rng = np.random.default_rng(length)
    for _ in range(20):
        tokens = rng.integers(2, 800, length).astype(np.int32)
        out = corrupt(tokens, rng, first_sentinel_id=VOCAB - 1, eos_id=1)
        inputs, targets = out["inputs"], out["targets"]
        assert inputs[-1] == targets[-1] == 1
        assert rebuild(inputs, targets, VOCAB - 1) == tokens.tolist()
        noise = min(max(int(round(length * 0.15)), 1), length - 1)
        spans = max(int(round(noise / 3.0)), 1)
        sentinels = [t for t in targets.tolist() if t >= VOCAB - 100]
        assert sentinels == list(range(VOCAB - 1, VOCAB - 1 - spans, -1))
        assert len(targets) == noise + spans + 1 and len(inputs) == length - noise + spans + 1
        assert inputs[0] == tokens[0]  # spans interleave starting with kept text


def test_corrupted_inputs_fill_the_length_exactly():
    raw, target_len = span_corruption_lengths(64)
    out = corrupt(np.arange(raw, dtype=np.int32) + 2, np.random.default_rng(0),
                  first_sentinel_id=VOCAB - 1, eos_id=1)
    assert (len(out["inputs"]), len(out["targets"])) == (64, target_len)


def test_span_corruption_transform_draws_per_element():
    pieces = [np.arange(50, dtype=np.int32) + 2] * 4
    transform = SpanCorruption(first_sentinel_id=VOCAB - 1, eos_id=1)
    ds = grain.MapDataset.source(pieces).map(lambda p: {"tokens": p}).random_map(transform, seed=3)
    again = grain.MapDataset.source(pieces).map(lambda p: {"tokens": p}).random_map(transform, seed=3)
    inputs = [tuple(ds[i]["inputs"].tolist()) for i in range(4)]
    assert inputs == [tuple(again[i]["inputs"].tolist()) for i in range(4)]  # deterministic
    assert len(set(inputs)) > 1  # but not the same mask for every element


def test_addition_heldout_problems_are_never_trained():
    train = [addition_problem("train", i, seed=0, max_digits=3, holdout_fraction=0.05)
             for i in range(5000)]
    heldout = [addition_problem("heldout", i, seed=0, max_digits=3, holdout_fraction=0.05)
               for i in range(300)]
    assert not any(is_heldout(a, b, 0.05) for a, b in train)
    assert all(is_heldout(a, b, 0.05) and is_heldout(b, a, 0.05) for a, b in heldout)
    assert not {(a, b) for a, b in heldout} & {(a, b) for a, b in train}
    assert max(max(a, b) for a, b in train) >= 900 and min(min(a, b) for a, b in train) <= 9


def test_addition_examples_are_sums():
    examples = AdditionExamples("heldout", seed=1, max_digits=4, holdout_fraction=0.1)
    tok = examples.tokenizer
    for i in range(50):
        ex = examples(i)
        a, b = tok.decode(ex["inputs"]).split("+")
        assert ex["targets"][-1] == tok.eos_id
        assert tok.decode(ex["targets"][:-1]) == str(int(a) + int(b))


EXAMPLES = [{"inputs": np.array([5, 6, 7]), "targets": np.array([8, 9, 1])},
            {"inputs": np.array([10, 11]), "targets": np.array([12, 1])},
            {"inputs": np.array([13]), "targets": np.array([14, 15, 16, 1])},
            {"inputs": np.array([17, 18, 19, 20]), "targets": np.array([1])}]


def batches(packing: bool, rows: int = 2):
    ds = pair_dataset(grain.MapDataset.source(EXAMPLES), batch_size=rows, source_len=6,
                      target_len=6, start_id=3, shard=ProcessShard(), packing=packing,
                      shuffle=False, repeat=False)
    return list(ds)


def pairs_of(batch) -> list[tuple[list[int], list[int], list[int]]]:
    """(source, decoder input, target) of every pair in a batch, read back by segment id."""
    out = []
    for r in range(batch["tokens"].shape[0]):
        for seg in range(1, batch["segment_ids"][r].max() + 1):
            src = batch["tokens"][r][batch["segment_ids"][r] == seg].tolist()
            sel = batch["decoder_segment_ids"][r] == seg
            assert batch["positions"][r][batch["segment_ids"][r] == seg].tolist() == list(range(len(src)))
            assert batch["decoder_positions"][r][sel].tolist() == list(range(sel.sum()))
            assert (batch["loss_mask"][r][sel] == 1).all()
            out.append((src, batch["decoder_tokens"][r][sel].tolist(), batch["targets"][r][sel].tolist()))
        assert batch["loss_mask"][r].sum() == (batch["decoder_segment_ids"][r] > 0).sum()
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_pair_batches(packing):
    got = [pair for batch in batches(packing) for pair in pairs_of(batch)]
    expected = [(e["inputs"].tolist(), [3] + e["targets"][:-1].tolist(), e["targets"].tolist())
                for e in EXAMPLES]
    assert sorted(got) == sorted(expected)
    if not packing:
        first = batches(False)[0]
        np.testing.assert_array_equal(first["tokens"][0], [5, 6, 7, 0, 0, 0])
        np.testing.assert_array_equal(first["segment_ids"][0], [1, 1, 1, 0, 0, 0])
        np.testing.assert_array_equal(first["decoder_tokens"][0], [3, 8, 9, 0, 0, 0])
    else:
        assert len(batches(True, rows=1)) < len(EXAMPLES)  # pairs do share rows


def test_label_smoothing_equals_optax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (3, 5))
    loss, nll = smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), 0.1)
    labels = optax.smooth_labels(np.eye(11, dtype=np.float32)[targets], 0.1)
    np.testing.assert_allclose(loss, optax.softmax_cross_entropy(logits, labels), rtol=1e-6)
    np.testing.assert_allclose(nll, optax.softmax_cross_entropy_with_integer_labels(logits, targets),
                               rtol=1e-6)


def test_rsqrt_schedule_is_the_papers():
    """Vaswani et al. 2017, 5.3: lr = d^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    d, warmup = 512, 4000
    schedule = make_schedule(OptimizerConfig(schedule="rsqrt", lr=d ** -0.5 * warmup ** -0.5,
                                             warmup_steps=warmup))
    for step in (1, 10, 1000, 3999, 4000, 4001, 20000, 100000):
        paper = d ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        assert float(schedule(step - 1)) == pytest.approx(paper, rel=1e-5)  # optax counts from 0
