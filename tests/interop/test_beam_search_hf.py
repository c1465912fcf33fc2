"""Beam search against HF transformers' `generate(num_beams=...)` beyond the cases of
test_hf_parity_seq2seq: tokens AND scores (HF's `sequences_scores`), 20 new tokens with an end
token that some beams reach, length penalties 1.0, 0.6, 2.0 and a negative one under each
early-stopping rule, several stop tokens,
T5 v1.0, v1.1 and Marian, HF's default initialisation as well as large random weights (peaked
distributions: beams of one repeated token), and decoder-only prompts of unequal length (each
against HF on that prompt alone: HF's rows do not interact, so neither may ours)."""

import numpy as np
import pytest
import torch  # the hf extra: missing, this fails rather than skips
import transformers as T  # the hf extra: missing, this fails rather than skips

from jaxformer.generate.beam_search import beam_decode, make_settings
from jaxformer.interop import hf
from test_hf_parity_seq2seq import (CASES, SOURCES, V, frequent_token, hf_generate,
                                    hf_new_tokens, up_to_stop)

NEW = 20


def weights(model, scale: float | None, seed: int):
    """HF's own initialisation (scale None) or every weight N(0, scale^2) (peaked logits)."""
    torch.manual_seed(seed)
    if scale is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "embed_positions" in name and isinstance(model, T.MarianMTModel):
                    continue
                p.copy_(scale * torch.randn_like(p))
    return model.eval()


def hf_beams(hf_model, sources, stops, **settings):
    """HF's best hypothesis of each source: (new tokens up to and including the first stop token,
    its score)."""
    out, skip = hf_generate(hf_model, sources, list(stops), num_beams=4, max_new_tokens=NEW,
                            return_dict_in_generate=True, output_scores=True, **settings)
    return up_to_stop(out.sequences[:, skip:].tolist(), stops), out.sequences_scores.numpy()


def ours(model, sources, stops, **settings):
    out = beam_decode(model, sources, make_settings(NEW, num_beams=4, stop_tokens=stops,
                                                    **settings))
    return [row[:n].tolist() for row, n in zip(out.tokens, out.num_tokens)], out.scores


RULES = [dict(length_penalty=1.0, early_stopping=True), dict(length_penalty=0.6),
         dict(length_penalty=-0.5), dict(length_penalty=2.0, early_stopping="never")]


def check(hf_model, model, sources, stop_sets):
    for stops in stop_sets:
        for rules in RULES:
            expected, expected_scores = hf_beams(hf_model, sources, stops, **rules)
            got, scores = ours(model, sources, stops, **rules)
            assert got == expected, (stops, rules)
            np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-4,
                                       err_msg=str((stops, rules)))


@pytest.mark.parametrize("case, scale, seed, two_stops", [("t5-v1.0", None, 0, True),
                                                          ("t5-v1.0", 1.0, 2, False),
                                                          ("t5-v1.1", None, 1, False),
                                                          ("marian", None, 0, False)])
def test_encoder_decoder_beams_match_hf_in_tokens_and_scores(tmp_path, case, scale, seed,
                                                             two_stops):
    cls, config = CASES[case]
    hf_model = weights(cls(config), scale, seed)
    hf_model.save_pretrained(tmp_path)
    _, model = hf.load(tmp_path)
    eos = frequent_token(hf_new_tokens(hf_model, SOURCES, None, max_new_tokens=NEW))
    second = next(t for t in range(2, V - 1) if t != eos)
    check(hf_model, model, SOURCES, [(eos,), (eos, second)] if two_stops else [(eos,)])


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4,
                                           n_positions=64, bos_token_id=0, eos_token_id=0))
    path = tmp_path_factory.mktemp("gpt2")
    model.eval().save_pretrained(path)
    return model, path


def test_decoder_only_prompts_of_unequal_length_match_hf_one_by_one(gpt2):
    hf_model, path = gpt2
    _, model = hf.load(path)
    prompts = [s[:n] for s, n in zip(SOURCES, (7, 3, 4))]
    eos = frequent_token(hf_new_tokens(hf_model, [prompts[0]], None, max_new_tokens=NEW))
    for rules in RULES:
        got, scores = ours(model, prompts, (eos,), **rules)
        for prompt, row, score in zip(prompts, got, scores):
            expected, expected_score = hf_beams(hf_model, [prompt], (eos,), **rules)
            assert row == expected[0], rules
            np.testing.assert_allclose(score, expected_score[0], rtol=1e-4, atol=1e-4)
