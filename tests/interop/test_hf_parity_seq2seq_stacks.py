"""BART and Marian whose encoder and decoder differ in heads, feed-forward width and depth, against
HuggingFace transformers: tiny random models saved with `save_pretrained` and loaded by
`jaxformer.interop.hf` give the same float32 logits, count HF's parameters, give the same greedy
tokens (BART), and export back to checkpoints that transformers loads with the same logits. T5
export refuses such a config (its config.json has one num_heads and one d_ff)."""

import json

import numpy as np
import pytest
import torch  # the hf extra: missing, this fails rather than skips
import transformers as T  # the hf extra: missing, this fails rather than skips

import jax.numpy as jnp

from jaxformer import count_params, load_model_config
from jaxformer.generate import generate
from jaxformer.interop import hf
from jaxformer.interop.errors import UnsupportedConfigError
from test_hf_parity_seq2seq import ATOL, SMALL_BART, SOURCES, V, hf_new_tokens, padded, randomise

# d_model 24: encoder heads of 6, decoder heads of 8 (BART) and the other way round (Marian).
STACKS = dict(encoder_attention_heads=4, decoder_attention_heads=3, encoder_ffn_dim=40,
              decoder_ffn_dim=28)
CASES = {
    "bart": (T.BartForConditionalGeneration,
             T.BartConfig(**{**SMALL_BART, **STACKS}, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2, decoder_start_token_id=2, scale_embedding=True)),
    "marian": (T.MarianMTModel,
               T.MarianConfig(**{**SMALL_BART, "encoder_layers": 2, "decoder_layers": 3,
                                 "encoder_attention_heads": 3, "decoder_attention_heads": 4,
                                 "encoder_ffn_dim": 28, "decoder_ffn_dim": 40},
                              pad_token_id=V - 1, decoder_start_token_id=V - 1, eos_token_id=0,
                              scale_embedding=True, activation_function="swish")),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """case -> (HF model, its directory)."""
    out = {}
    for case, (cls, config) in CASES.items():
        path = tmp_path_factory.mktemp(f"{case}-stacks")
        model = randomise(cls(config))
        model.save_pretrained(path)
        out[case] = (model, path)
    return out


def hf_logits(hf_model, decoder) -> np.ndarray:
    ids, mask = padded(SOURCES)
    with torch.no_grad():
        return hf_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                        decoder_input_ids=torch.as_tensor(decoder)).logits.numpy()


DECODER = np.random.default_rng(2).integers(2, V - 1, (len(SOURCES), 7))


@pytest.mark.parametrize("case", CASES)
def test_logits_and_parameter_count_match_hf(checkpoints, case):
    hf_model, path = checkpoints[case]
    config, model = hf.load(path)
    hf_config = hf_model.config
    assert [config.stack_heads(s) for s in ("encoder", "decoder")] == [
        hf_config.encoder_attention_heads, hf_config.decoder_attention_heads]
    assert [config.stack_mlp_dim(s) for s in ("encoder", "decoder")] == [
        hf_config.encoder_ffn_dim, hf_config.decoder_ffn_dim]
    # The encoder's sizes are the shared ones; the decoder keeps what differs.
    assert (config.num_heads, config.mlp_dim) == (hf_config.encoder_attention_heads,
                                                 hf_config.encoder_ffn_dim)
    assert (config.encoder_num_heads, config.encoder_mlp_dim) == (None, None)
    assert (config.decoder_num_heads, config.decoder_mlp_dim) == (hf_config.decoder_attention_heads,
                                                                  hf_config.decoder_ffn_dim)
    ids, mask = padded(SOURCES)
    out = model(jnp.asarray(ids), jnp.asarray(DECODER), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out.logits), hf_logits(hf_model, DECODER), atol=ATOL,
                               rtol=0)
    # HF counts Marian's fixed sinusoids (frozen parameters jaxformer computes) and not
    # final_logits_bias (a buffer); the trainable ones are what both count.
    assert count_params(config) == hf_model.num_parameters(only_trainable=True)


def test_greedy_matches_hf(checkpoints):
    """Decoding through the cache: the decoder's heads in self- and cross-attention."""
    hf_model, path = checkpoints["bart"]
    _, model = hf.load(path)
    eos = hf_model.config.eos_token_id
    expected = hf_new_tokens(hf_model, SOURCES, eos, max_new_tokens=12)
    assert generate(model, SOURCES, 12, temperature=0.0, stop_tokens=[eos]) == expected


@pytest.mark.parametrize("case", CASES)
def test_export_loads_in_transformers(checkpoints, tmp_path, case):
    hf_model, path = checkpoints[case]
    config, model = hf.load(path)
    hf.save(tmp_path, config, model)
    written = json.loads((tmp_path / "config.json").read_text())
    for key in ("encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
                "decoder_ffn_dim", "encoder_layers", "decoder_layers"):
        assert written[key] == getattr(hf_model.config, key), key
    reloaded = type(hf_model).from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(hf_logits(reloaded, DECODER), hf_logits(hf_model, DECODER),
                               atol=1e-6, rtol=0)


def test_t5_export_refuses_per_stack_sizes(tmp_path):
    config = load_model_config("t5-small", d_model=16, num_heads=2, mlp_dim=32, vocab_size=40,
                               encoder_layers=1, decoder_layers=1, decoder_mlp_dim=24)
    with pytest.raises(UnsupportedConfigError, match="differ in heads or mlp_dim"):
        hf.save(tmp_path, config, None)
    assert not any(tmp_path.iterdir())
