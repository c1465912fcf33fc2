"""Mixtral: HF parity on a random small model, export back to HF, and the published sizes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxformer
from jaxformer.models.costs import flops_parts, param_counts

import torch  # an installed extra: missing, this fails rather than skips
import transformers  # an installed extra: missing, this fails rather than skips


def make_mixtral(path, **changes):
    """A random MixtralForCausalLM: 4 experts, top-2, GQA (4 query heads, 2 key/value heads)."""
    config = transformers.MixtralConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64, rms_norm_eps=1e-5, **changes)
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(config).eval()
    with torch.no_grad():  # HF's init leaves the router near zero: spread it so routing matters
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0.0, 0.5)
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def tiny_mixtral(tmp_path_factory):
    return make_mixtral(tmp_path_factory.mktemp("mixtral"))


@pytest.fixture(scope="module")
def windowed_mixtral(tmp_path_factory):
    """The same model with `sliding_window` 6: each token sees itself and the 5 before it."""
    return make_mixtral(tmp_path_factory.mktemp("mixtral_window"), sliding_window=6)


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens))).logits.numpy()


def test_logits_match_hf(tiny_mixtral):
    from jaxformer.interop import hf

    path, reference = tiny_mixtral
    names = json.loads((path / "config.json").read_text())
    assert names["architectures"] == ["MixtralForCausalLM"]
    config, model = hf.load(path)
    assert (config.moe_num_experts, config.moe_top_k, config.kv_heads) == (4, 2, 2)
    tokens = np.random.default_rng(0).integers(0, 97, (2, 24))
    out = model(jnp.asarray(tokens))
    np.testing.assert_allclose(out.logits, hf_logits(reference, tokens), atol=1e-4)
    # Every expert is used by some token (the comparison covers them all).
    assert all(float(out.stats[f"moe/load_expert_{e}"]) > 0 for e in range(4))


def test_sliding_window_matches_hf(windowed_mixtral):
    """24 tokens through a window of 6, whole sequence and one token at a time through the KV
    cache: HF's logits at every position. Without the window the logits differ, so the window is
    what is being compared."""
    from jaxformer.interop import hf

    path, reference = windowed_mixtral
    config, model = hf.load(path)
    assert config.sliding_window == 6
    tokens = np.random.default_rng(2).integers(0, 97, (2, 24))
    want = hf_logits(reference, tokens)
    np.testing.assert_allclose(model(jnp.asarray(tokens)).logits, want, atol=1e-4)
    reference.config.sliding_window = None
    unwindowed = hf_logits(reference, tokens)
    reference.config.sliding_window = 6
    assert np.abs(unwindowed[:, 6:] - want[:, 6:]).max() > 1e-2

    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, tokens, positions, cache):
        out = nnx.merge(graphdef, state)(tokens, positions, cache=cache)
        return out.logits, out.cache

    positions = np.broadcast_to(np.arange(24, dtype=np.int32), (2, 24))
    logits, cache = step(state, tokens[:, :4], positions[:, :4], model.init_cache(2, 24))
    steps = [np.asarray(logits)]
    for t in range(4, 24):
        logits, cache = step(state, tokens[:, t:t + 1], positions[:, t:t + 1], cache)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), want, atol=1e-4)


def test_export_round_trip(tiny_mixtral, tmp_path):
    from jaxformer.interop import hf

    path, reference = tiny_mixtral
    config, model = hf.load(path)
    hf.save(tmp_path, config, model)
    again = transformers.MixtralForCausalLM.from_pretrained(tmp_path).eval()
    tokens = np.random.default_rng(1).integers(0, 97, (1, 16))
    np.testing.assert_allclose(hf_logits(again, tokens), hf_logits(reference, tokens), atol=1e-5)


def test_mixtral_8x7b_sizes():
    """Mistral AI's published figures: 46.7B parameters, 12.9B active per token."""
    config = jaxformer.load_model_config("mixtral-8x7b")
    counts = param_counts(config)
    assert counts.total == 46_702_792_704
    assert counts.active == 12_879_925_248
    # PaLM's 6N with N the active parameters (no position table under RoPE), plus attention.
    parts = flops_parts(config, 4096)
    assert sorted(parts.values()) == sorted([6 * 12_879_925_248, 12 * 32 * 32 * 128 * 4096])


def test_info_shows_total_and_active_parameters_and_flops(capsys):
    from jaxformer import cli

    assert cli.main(["info", "--seq-len", "4096", "mixtral-8x7b"]) == 0
    out = capsys.readouterr().out
    assert "46,702,792,704" in out and "12,879,925,248" in out
    assert f"{6 * 12_879_925_248 + 12 * 32 * 32 * 128 * 4096:,}" in out  # FLOPs per token
    assert "attention: auto picks" in out  # the kernel `attention_impl: auto` runs here
