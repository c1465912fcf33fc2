"""HF checkpoint import/export against HuggingFace transformers itself.

Small random GPT-2 and Llama models (every weight, bias and norm scale randomised, so a swapped or
mis-transposed tensor shows) are saved with `save_pretrained`, loaded by `jaxformer.interop.hf`,
and must give the same float32 logits as the PyTorch model, with and without padding and when
decoding token by token through the KV cache. Bad directories must fail with named errors.
"""

import json

import numpy as np
import pytest

# The HF extra (the README's test command installs it): missing, these tests fail, not skip.
import torch  # noqa: E402
import transformers  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from jaxformer import DecoderLM, count_params, load_model_config  # noqa: E402
from jaxformer.errors import UserError  # noqa: E402
from jaxformer.interop import hf  # noqa: E402
from jaxformer.interop.errors import (MissingTensorError, ShapeMismatchError,  # noqa: E402
                                      UnexpectedTensorError, UnsafeCheckpointError,
                                      UnsupportedArchitectureError, UnsupportedConfigError)
from jaxformer.nn import RopeScaling  # noqa: E402

ATOL = 1e-4
VOCAB = 101

GPT2_CASES = {
    # d_model 72 / 6 heads: head_dim 12; tied head as in the published GPT-2.
    "gpt2-tied": dict(vocab_size=VOCAB, n_embd=72, n_layer=2, n_head=6, n_positions=32),
    # untied head, an odd feed-forward width, another activation.
    "gpt2-untied": dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                        n_inner=40, activation_function="relu", tie_word_embeddings=False,
                        layer_norm_epsilon=1e-6),
}
LLAMA_CASES = {
    "llama-gqa": dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
    # MQA with head_dim * heads != hidden_size, tied embeddings.
    "llama-mqa-tied": dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=16, max_position_embeddings=64, tie_word_embeddings=True),
    # Llama-3.1 frequency scaling, with original_max_position small enough that all three bands
    # (kept, interpolated, slowed) occur at head_dim 16.
    "llama3-rope": dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=64, rope_theta=10000.0,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0,
                                          original_max_position_embeddings=16)),
    # biases on every projection and a GeGLU feed-forward.
    "llama-bias-geglu": dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                             max_position_embeddings=64, attention_bias=True, mlp_bias=True,
                             hidden_act="gelu", rms_norm_eps=1e-5),
}
CASES = {**GPT2_CASES, **LLAMA_CASES}


def make_hf_model(case: str, seed: int = 0):
    """A random float32 HF model for `case`, with norms and biases randomised as well."""
    torch.manual_seed(seed)
    if case in GPT2_CASES:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_CASES[case]))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_CASES[case]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm_scale = p.ndim == 1 and ("ln_" in name or "norm" in name) and name.endswith("weight")
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if is_norm_scale else 0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """case -> (HF model, directory it was saved to)."""
    out = {}
    for case in CASES:
        model = make_hf_model(case)
        path = tmp_path_factory.mktemp(case)
        model.save_pretrained(path)
        out[case] = (model, path)
    return out


def hf_logits(model, tokens, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens)), **kwargs).logits.float().numpy()


def forward(model, tokens, positions=None, segment_ids=None) -> np.ndarray:
    """The jaxformer model's logits, jit-compiled (one compile beats eager op-by-op dispatch)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, tokens, positions, segment_ids):
        return nnx.merge(graphdef, state)(tokens, positions, segment_ids).logits

    return np.asarray(run(state, jnp.asarray(tokens), positions, segment_ids))


def random_tokens(batch: int, time: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, time), dtype=np.int32)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_hf(checkpoints, case):
    hf_model, path = checkpoints[case]
    config, model = hf.load(path)
    tokens = random_tokens(2, 13)
    logits = forward(model, tokens)
    expected = hf_logits(hf_model, tokens)
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
    # The import must carry the structure as well as the numbers.
    n_hf = sum(p.numel() for p in hf_model.parameters())
    assert count_params(config) == n_hf


def test_top_level_hf_loads_the_same_model(checkpoints):
    """`from jaxformer import hf` (as the issues write `hf.load`) is the importer itself."""
    from jaxformer import hf as top_level_hf

    hf_model, path = checkpoints["gpt2-tied"]
    _, model = top_level_hf.load(path)
    tokens = random_tokens(1, 7)
    np.testing.assert_allclose(forward(model, tokens), hf_logits(hf_model, tokens), atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["gpt2-tied", "llama-gqa"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_matches_hf_attention_mask(checkpoints, case, side):
    """HF attention_mask 0 <-> jaxformer segment id 0; positions count real tokens only."""
    hf_model, path = checkpoints[case]
    _, model = hf.load(path)
    tokens = random_tokens(3, 10, seed=2)
    lengths = np.array([10, 6, 3])
    idx = np.arange(10)[None, :]
    mask = (idx < lengths[:, None]) if side == "right" else (idx >= 10 - lengths[:, None])
    mask = mask.astype(np.int32)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    expected = hf_logits(hf_model, tokens, attention_mask=torch.as_tensor(mask),
                         position_ids=torch.as_tensor(positions, dtype=torch.long))
    logits = forward(model, tokens, jnp.asarray(positions), jnp.asarray(mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(logits[real], expected[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["gpt2-untied", "llama-gqa", "llama3-rope"])
def test_kv_cache_decoding_matches_hf(checkpoints, case):
    """Prefill a prompt, then feed one token at a time through the cache: each step's logits equal
    HF's logits for the whole sequence at that position."""
    hf_model, path = checkpoints[case]
    _, model = hf.load(path)
    batch, prompt, total = 2, 5, 12
    tokens = random_tokens(batch, total, seed=3)
    positions = np.broadcast_to(np.arange(total, dtype=np.int32), (batch, total))
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, tokens, positions, cache):
        out = nnx.merge(graphdef, state)(tokens, positions, cache=cache)
        return out.logits, out.cache

    cache = model.init_cache(batch, total)
    logits, cache = step(state, tokens[:, :prompt], positions[:, :prompt], cache)
    steps = [np.asarray(logits)]
    for t in range(prompt, total):
        logits, cache = step(state, tokens[:, t:t + 1], positions[:, t:t + 1], cache)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), hf_logits(hf_model, tokens),
                               atol=ATOL, rtol=0)


def test_sharded_checkpoint(tmp_path):
    hf_model = make_hf_model("llama-gqa", seed=4)
    hf_model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    _, model = hf.load(tmp_path)
    tokens = random_tokens(1, 7)
    np.testing.assert_allclose(forward(model, tokens), hf_logits(hf_model, tokens), atol=ATOL, rtol=0)


def test_bfloat16_load(checkpoints):
    hf_model, path = checkpoints["llama-gqa"]
    config, model = hf.load(path, dtype="bfloat16", attention_impl="einsum")
    assert config.param_dtype == "bfloat16" and config.attention_impl == "einsum"
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(leaf.dtype == jnp.bfloat16 for leaf in leaves)
    tokens = random_tokens(2, 9)
    logits = forward(model, tokens)
    expected = hf_logits(hf_model, tokens)
    # bfloat16 keeps ~3 significant digits: close, but not float32-close.
    assert np.abs(logits - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("case", ["gpt2-tied", "gpt2-untied", "llama-mqa-tied", "llama3-rope",
                                  "llama-bias-geglu"])
def test_round_trip_through_hf_directory(checkpoints, tmp_path, case):
    """HF -> jaxformer -> save -> transformers loads it: same tensors, same logits."""
    hf_model, path = checkpoints[case]
    config, model = hf.load(path)
    out = hf.save(tmp_path / "export", config, model)
    original, exported = load_file(path / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(exported) == set(original)
    for name, array in original.items():
        np.testing.assert_array_equal(exported[name], array, err_msg=name)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokens = random_tokens(2, 11)
    np.testing.assert_array_equal(hf_logits(reloaded, tokens), hf_logits(hf_model, tokens))
    with pytest.raises(UserError, match="already holds a model"):
        hf.save(out, config, model)


def test_published_configs_match_presets():
    """config.json of the published GPT-2 small and Llama-3.1-8B map onto the presets."""
    gpt2 = {  # openai-community/gpt2 (no n_inner / tie keys: GPT2Config's defaults apply)
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "n_ctx": 1024,
        "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "model_type": "gpt2",
        "layer_norm_epsilon": 1e-05, "vocab_size": 50257}
    assert hf.config_from_hf(gpt2) == load_model_config("gpt2-small").replace(mlp_dim=3072)
    llama = {  # meta-llama/Llama-3.1-8B
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "head_dim": 128,
        "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "vocab_size": 128256}
    config = hf.config_from_hf(llama)
    assert config.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 8192)
    assert config == load_model_config("llama-3.1-8b").replace(dtype="float32")
    # transformers 5 layout: rope_theta inside rope_parameters.
    v5 = {k: v for k, v in llama.items() if k not in ("rope_theta", "rope_scaling")}
    v5["rope_parameters"] = {**llama["rope_scaling"], "rope_theta": 500000.0}
    assert hf.config_from_hf(v5) == config


# --- bad input -------------------------------------------------------------------------------


def copy_checkpoint(src, dst, edit_tensors=None, edit_config=None):
    dst.mkdir()
    tensors = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_refuses_pickled_weights(checkpoints, tmp_path):
    _, path = checkpoints["gpt2-tied"]
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin") as e:
        hf.load(tmp_path)
    assert "safe_serialization=True" in str(e.value)
    assert isinstance(e.value, UserError)


def test_missing_tensor_is_named(checkpoints, tmp_path):
    name = "transformer.h.1.mlp.c_fc.weight"
    bad = copy_checkpoint(checkpoints["gpt2-tied"][1], tmp_path / "bad",
                          edit_tensors=lambda t: t.pop(name))
    with pytest.raises(MissingTensorError, match=name.replace(".", r"\.")):
        hf.load(bad)


def test_wrong_shape_is_named(checkpoints, tmp_path):
    name = "model.layers.0.self_attn.k_proj.weight"

    def shrink(tensors):
        tensors[name] = tensors[name][:16]

    bad = copy_checkpoint(checkpoints["llama-gqa"][1], tmp_path / "bad", edit_tensors=shrink)
    with pytest.raises(ShapeMismatchError) as e:
        hf.load(bad)
    assert name in str(e.value) and "[16, 64]" in str(e.value) and "[32, 64]" in str(e.value)


def test_unknown_architecture_is_named(checkpoints, tmp_path):
    def neox(config):
        config["architectures"] = ["GPTNeoXForCausalLM"]

    bad = copy_checkpoint(checkpoints["gpt2-tied"][1], tmp_path / "bad", edit_config=neox)
    with pytest.raises(UnsupportedArchitectureError, match="GPTNeoXForCausalLM") as e:
        hf.load(bad)
    assert "GPT2LMHeadModel" in str(e.value) and "LlamaForCausalLM" in str(e.value)


def test_extra_tensors_named_and_known_buffers_ignored(checkpoints, tmp_path):
    src = checkpoints["gpt2-tied"][1]

    def add_buffers(tensors):  # what older GPT-2 checkpoints carry
        tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
        tensors["transformer.h.0.attn.masked_bias"] = np.array(-1e4, np.float32)

    hf.load(copy_checkpoint(src, tmp_path / "buffers", edit_tensors=add_buffers))

    def add_layer(tensors):
        tensors["transformer.h.2.ln_1.weight"] = np.ones(72, np.float32)

    with pytest.raises(UnexpectedTensorError, match=r"transformer\.h\.2\.ln_1\.weight"):
        hf.load(copy_checkpoint(src, tmp_path / "extra", edit_tensors=add_layer))


def test_checkpoint_without_base_prefix(checkpoints, tmp_path):
    """The published gpt2 checkpoint was saved from GPT2Model: names lack `transformer.`."""
    hf_model, src = checkpoints["gpt2-tied"]

    def strip(tensors):
        for name in list(tensors):
            tensors[name.removeprefix("transformer.")] = tensors.pop(name)

    _, model = hf.load(copy_checkpoint(src, tmp_path / "bare", edit_tensors=strip))
    tokens = random_tokens(1, 5)
    np.testing.assert_allclose(forward(model, tokens), hf_logits(hf_model, tokens), atol=ATOL, rtol=0)


@pytest.mark.parametrize("edit, message", [
    (dict(attention_bias=True, mlp_bias=False), "attention_bias"),
    (dict(rope_parameters=dict(rope_type="yarn", factor=4.0, rope_theta=1e4)), "yarn"),
    (dict(hidden_act="gelu_pytorch_tanh"), "hidden_act"),
])
def test_unsupported_llama_settings(edit, message):
    config = dict(architectures=["LlamaForCausalLM"], **LLAMA_CASES["llama-gqa"], **edit)
    with pytest.raises(UnsupportedConfigError, match=message):
        hf.config_from_hf(config)


def test_load_errors_for_paths_and_overrides(checkpoints, tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        hf.load(tmp_path / "nowhere")
    with pytest.raises(UserError, match="config.json"):
        hf.load(tmp_path)
    with pytest.raises(UserError, match="num_layers"):
        hf.load(checkpoints["gpt2-tied"][1], num_layers=3)
    with pytest.raises(UserError, match="scan_layers"):
        hf.load(checkpoints["gpt2-tied"][1], scan_layers=True)


def test_export_refuses_configs_hf_cannot_express(tmp_path):
    config = load_model_config("tiny-gpt2").replace(position="alibi")
    with pytest.raises(UnsupportedConfigError, match="no HuggingFace architecture"):
        hf.save(tmp_path, config, None)
    assert not any(tmp_path.iterdir())
    # A reward model would be written as a plain LM, its scalar head lost.
    with pytest.raises(UnsupportedConfigError, match="head='reward'"):
        hf.save(tmp_path, load_model_config("tiny-gpt2").replace(head="reward"), None)
    assert not any(tmp_path.iterdir())


def test_export_of_a_jaxformer_model_runs_in_transformers(tmp_path):
    """Parameters made in jaxformer's layout (not imported), saved as HF from their nnx.State,
    give the same logits in transformers."""
    config = load_model_config("tiny-llama")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(5)
    # Random numpy values (norm scales included) rather than DecoderLM's init: cheaper in eager.
    state = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32), state)
    hf.save(tmp_path, config, state)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokens = np.random.default_rng(6).integers(0, config.vocab_size, (2, 9), dtype=np.int32)
    np.testing.assert_allclose(hf_logits(reloaded, tokens), forward(nnx.merge(graphdef, state), tokens),
                               atol=ATOL, rtol=0)
