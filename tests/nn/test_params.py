"""Parameter counts of the presets equal the published (HuggingFace) figures, are computed without
allocating weights, and agree with a model that is actually built. Config validation errors name
the problem and the fix."""

import jax
import numpy as np
import pytest
from flax import nnx

import jaxformer
from jaxformer import DecoderLM
from jaxformer.errors import ConfigError
from jaxformer.models.costs import count_params, ffn_params, flops_per_token, param_counts, param_shapes

# HF transformers `model.num_parameters()` (tied weights once); see shared/docs/REFERENCE_NUMBERS.md.
PUBLISHED = {
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "llama-3.1-8b": 8_030_261_248,
}


@pytest.mark.parametrize("preset", PUBLISHED)
def test_preset_counts_equal_published(preset):
    assert jaxformer.count_params(jaxformer.load_model_config(preset)) == PUBLISHED[preset]


def test_gpt2_small_breakdown():
    """GPT-2 small by hand: wte 50257x768, wpe 1024x768, per layer c_attn 768x2304 + 2304,
    c_proj 768x768 + 768, c_fc 768x3072 + 3072, mlp.c_proj 3072x768 + 768, two LayerNorms."""
    counts = param_counts(jaxformer.load_model_config("gpt2-small"))
    d, layers = 768, 12
    assert counts.token_embedding == 50257 * d
    assert counts.positions == 1024 * d
    assert counts.lm_head == 0  # tied
    assert counts.attention == layers * (d * 3 * d + 3 * d + d * d + d)
    assert counts.feed_forward == layers * (d * 4 * d + 4 * d + 4 * d * d + d)
    assert counts.norms == (2 * layers + 1) * 2 * d
    config = jaxformer.load_model_config("gpt2-small")
    assert count_params(config, include_positions=False) == PUBLISHED["gpt2-small"] - 1024 * d
    assert ffn_params(config) == counts.feed_forward


def test_llama_breakdown():
    """Llama 3.1 8B: untied head, GQA k/v of 8 heads x 128, SwiGLU of width 14336, no biases."""
    counts = param_counts(jaxformer.load_model_config("llama-3.1-8b"))
    d, layers = 4096, 32
    assert counts.token_embedding == counts.lm_head == 128256 * d
    assert counts.positions == 0
    assert counts.attention == layers * (2 * d * d + 2 * d * 8 * 128)
    assert counts.feed_forward == layers * 3 * d * 14336
    assert counts.norms == (2 * layers + 1) * d


@pytest.mark.parametrize("name,overrides", [
    ("tiny-gpt2", {}), ("tiny-llama", {}), ("tiny-gpt2", {"norm_position": "post", "num_layers": 3}),
    ("tiny-llama", {"num_kv_heads": 1, "tie_embeddings": True}), ("tiny-gpt2", {"position": "sinusoidal"}),
])
def test_count_equals_built_model(name, overrides):
    """The count (from a one-layer abstract copy) equals the sizes of a real, allocated model and
    of the full abstract one."""
    config = jaxformer.load_model_config(name, **overrides)
    model = DecoderLM(config, rngs=nnx.Rngs(0))
    built = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    abstract = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes(config)))
    assert count_params(config) == built == abstract


def test_counting_allocates_nothing():
    """Llama 3.1 8B in float32 is 32 GB: counting it must not create a single weight."""
    before = sum(x.nbytes for x in jax.live_arrays())
    config = jaxformer.load_model_config("llama-3.1-8b", param_dtype="float32", dtype="float32")
    assert count_params(config) == PUBLISHED["llama-3.1-8b"]
    after = sum(x.nbytes for x in jax.live_arrays())
    assert after - before < 1_000_000


def test_flops_per_token_is_palm_formula():
    config = jaxformer.load_model_config("gpt2-small")
    n = PUBLISHED["gpt2-small"] - 1024 * 768  # without the position table
    assert flops_per_token(config) == 6 * n + 12 * 12 * 768 * 1024
    assert flops_per_token(config, seq_len=256) == 6 * n + 12 * 12 * 768 * 256


# --- config validation: the message names the key and the fix


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"num_layer\b.*did you mean.*num_layers"):
        jaxformer.load_model_config("tiny-gpt2", num_layer=3)


@pytest.mark.parametrize("key,value,expected", [
    ("position", "rotary", r"position.*rotary.*rope"),
    ("norm", "batchnorm", r"norm.*batchnorm.*rmsnorm"),
    ("norm_position", "middle", r"norm_position.*middle.*pre"),
    ("activation", "swish", r"activation.*swish.*swiglu"),
])
def test_bad_choice_lists_the_valid_ones(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        jaxformer.load_model_config("tiny-llama", **{key: value})


def test_kv_heads_must_divide_heads():
    with pytest.raises(ConfigError, match=r"num_kv_heads=3 must divide .*num_heads=4"):
        jaxformer.load_model_config("tiny-llama", num_kv_heads=3)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"d_model"):
        jaxformer.load_model_config("tiny-gpt2", d_model="wide")


def test_config_errors_are_value_errors():
    """Library users catching ValueError keep working; the CLI catches ConfigError (a UserError)."""
    with pytest.raises(ValueError):
        jaxformer.load_model_config("tiny-gpt2", num_heads=5)  # 64 is not divisible by 5


def test_unknown_preset_suggests_close_match():
    with pytest.raises(FileNotFoundError, match=r"(?i)gpt2-smal.*did you mean.*gpt2-small"):
        jaxformer.load_model_config("gpt2-smal")
