"""Whisper decoding against HF's `WhisperForConditionalGeneration.generate` on the random small
model of test_whisper_hf (loaded through `hf.load`): log-mel features in place of prompts, a
forced decoder prefix (start, "language", "task", "no timestamps" stand-ins) given as
`decoder_input_ids`, with and without `suppress_tokens` / `begin_suppress_tokens`: greedy tokens
identical to HF's, beam search (3 beams) tokens identical to HF's; the suppression shown to
change the result; the request checks."""

import numpy as np
import pytest
import torch

from jaxformer.errors import UserError
from jaxformer.generate import beam_search, generate
from jaxformer.interop import hf
from test_whisper_hf import EOS, SIZES, START, hf_model

PREFIX = [START, 90, 91, 92]
NEW = SIZES["max_target_positions"] - len(PREFIX)  # HF: prefix + new tokens <= positions


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("whisper_generate")
    reference = hf_model()
    reference.save_pretrained(path)
    # No suppression unless asked for (HF's default lists name Whisper's real token ids).
    reference.generation_config.begin_suppress_tokens = None
    reference.generation_config.suppress_tokens = None
    return reference, hf.load(path)[1]


def features(batch=3):
    rng = np.random.default_rng(1)
    return rng.normal(size=(batch, SIZES["num_mel_bins"], 32)).astype(np.float32)


def up_to_stop(row):
    return row[:row.index(EOS) + 1] if EOS in row else row


def hf_generate(reference, feats, num_beams=1, suppress=None, begin_suppress=None):
    extra = {}
    if suppress is not None:
        extra["suppress_tokens"] = suppress
    if begin_suppress is not None:
        extra["begin_suppress_tokens"] = begin_suppress
    prefix = torch.tensor([PREFIX] * len(feats))
    with torch.no_grad():
        out = reference.generate(torch.from_numpy(feats), decoder_input_ids=prefix,
                                 max_new_tokens=NEW, do_sample=False, num_beams=num_beams,
                                 eos_token_id=EOS, pad_token_id=EOS, **extra)
    rows = out.numpy().tolist()
    # Whisper's generate returns the new tokens alone (or, in some releases, the prefix first).
    return [up_to_stop(r[len(PREFIX):] if r[:len(PREFIX)] == PREFIX else r) for r in rows]


def ours(model, feats, num_beams=1, suppress=(), begin_suppress=()):
    # Empty lists suppress nothing and keep one compiled program for both calls of a test.
    settings = dict(decoder_prefix=PREFIX, stop_tokens=[EOS], suppress_tokens=suppress,
                    begin_suppress_tokens=begin_suppress)
    if num_beams == 1:
        return generate(model, feats, NEW, temperature=0.0, **settings)
    return beam_search(model, feats, NEW, num_beams=num_beams, **settings)


def most_common(rows, n):
    tokens, counts = np.unique(np.concatenate([np.asarray(r) for r in rows]), return_counts=True)
    return [int(t) for t in tokens[np.argsort(-counts)][:n] if t != EOS]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_tokens_match_hf_generate(models, num_beams):
    reference, model = models
    feats = features()
    plain = ours(model, feats, num_beams)
    assert plain == hf_generate(reference, feats, num_beams)
    assert len({t for row in plain for t in row}) > 2  # varied, not one token repeated

    # Suppress what it produced most, and each row's first token at the start only.
    suppress = most_common(plain, 2)
    begin = sorted({row[0] for row in plain} - set(suppress))
    got = ours(model, feats, num_beams, suppress=suppress, begin_suppress=begin)
    assert got == hf_generate(reference, feats, num_beams, suppress=suppress,
                              begin_suppress=begin)
    assert got != plain
    assert not {t for row in got for t in row} & set(suppress)
    assert not {row[0] for row in got} & set(begin)


def test_per_row_prefix_equals_one_row_at_a_time(models):
    _, model = models
    feats = features(2)
    prefixes = [[START, 90, 91, 92], [START, 93, 94, 92]]
    both = generate(model, feats, 6, temperature=0.0, decoder_prefix=prefixes)
    alone = [generate(model, feats[i:i + 1], 6, temperature=0.0, decoder_prefix=prefixes[i])[0]
             for i in range(2)]
    assert both == alone


def test_request_checks(models):
    _, model = models
    feats = features(2)
    with pytest.raises(UserError, match=r"features must be an array \[batch, 10, 32\]"):
        generate(model, feats[:, :, :30], 4)
    with pytest.raises(UserError, match="need 25 decoder positions, more than the model's 24"):
        generate(model, feats, NEW + 2, decoder_prefix=PREFIX)
    with pytest.raises(UserError, match="outside the vocabulary"):
        generate(model, feats, 4, decoder_prefix=PREFIX, suppress_tokens=[SIZES["vocab_size"]])
    with pytest.raises(UserError, match="one length"):
        generate(model, feats, 4, decoder_prefix=[[START, 1], [START]])
