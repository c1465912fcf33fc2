"""Padded vocabularies change nothing a user sees; parameter sharding rules that do not fit are
errors; new logical axis names are declared beside the rules; LM heads give float32 logits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxformer
from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.parallel import MeshConfig, ParallelPlan, make_rules
from jaxformer.parallel.rules import declare_logical_axis
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state, init_train_state, model_graphdef
from jaxformer.train.step import make_train_step


def test_gpt2_vocabulary_is_padded_to_a_multiple_of_128_and_counted_unpadded():
    config = jaxformer.load_model_config("gpt2-small")
    assert (config.vocab_size, config.padded_vocab_size) == (50257, 50304)
    shapes = jaxformer.models.abstract_model(config.replace(num_layers=1)).embed.embedding
    assert shapes.shape == (50304, 768)
    assert jaxformer.count_params(config) == 124_439_808  # HF's figure: padding not counted


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])  # tied and untied heads
def test_padded_vocabulary_gives_the_same_logits_on_real_tokens(preset):
    padded = jaxformer.load_model_config(preset, vocab_size=97)
    plain = padded.replace(vocab_pad_multiple=1)
    assert padded.padded_vocab_size == 128 and plain.padded_vocab_size == 97
    a = jaxformer.build_model(padded, rngs=nnx.Rngs(0))
    b = jaxformer.build_model(plain, rngs=nnx.Rngs(0))
    # The real rows are drawn exactly as without padding; the padding rows are zeros.
    np.testing.assert_array_equal(a.embed.embedding[...][:97], b.embed.embedding[...])
    assert not np.asarray(a.embed.embedding[...][97:]).any()
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 11)))
    logits_a, logits_b = a(tokens).logits, b(tokens).logits
    assert logits_a.shape == logits_b.shape == (2, 11, 97)
    np.testing.assert_allclose(logits_a, logits_b, rtol=1e-6, atol=1e-6)
    assert jaxformer.count_params(padded) == jaxformer.count_params(plain)


def test_padding_rows_stay_zero_through_training():
    config = load_config(None, ["model.vocab_size=97", "model.d_model=32", "model.num_layers=1",
                                "model.num_heads=2", "model.max_seq_len=8", "train.seq_len=8",
                                "optimizer.warmup_steps=0", "model.tie_embeddings=false"])
    state = create_state(config)
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    tokens = np.random.default_rng(1).integers(0, 97, (4, 9)).astype(np.int32)
    batch = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
             "positions": np.tile(np.arange(8, dtype=np.int32), (4, 1)),
             "segment_ids": np.ones((4, 8), np.int32), "loss_mask": np.ones((4, 8), np.float32)}
    for _ in range(3):
        state, _ = step(state, batch)
    embedding = np.asarray(state.params["embed"]["embedding"][...])
    head = np.asarray(state.params["lm_head"]["kernel"][...])
    assert np.abs(embedding[:97]).max() > 0 and not embedding[97:].any()
    assert not head[:, 97:].any()


def test_a_rule_that_does_not_divide_a_parameter_is_an_error_naming_it():
    config = load_config(None, ["model.d_model=32", "model.num_layers=1", "model.num_heads=4",
                                "model.num_kv_heads=2", "model.max_seq_len=8", "train.seq_len=8"])
    init = lambda: init_train_state(config, jax.random.PRNGKey(0))  # noqa: E731
    plan = ParallelPlan.from_config(MeshConfig(data=2, tensor=4))
    with pytest.raises(ConfigError, match=r"parameter params/layers/0/attention/key/\w+ has 2 "
                                          r"entries on its 'kv_heads' axis.*mesh axis tensor of "
                                          r"size 4.*mesh.rules.kv_heads=null"):
        plan.create(init)
    # The fix the message names works: replicated key/value heads.
    relaxed = ParallelPlan.from_config(MeshConfig(data=2, tensor=4, rules={"kv_heads": None}))
    state = relaxed.create(init)
    key = state.params["layers"][0]["attention"]["key"]["kernel"][...]
    assert key.sharding.spec[1] is None


def test_new_logical_axes_are_declared_beside_the_rules():
    with pytest.raises(ConfigError, match="unknown logical axis 'test_expert'"):
        make_rules({"test_expert": "data"})
    declare_logical_axis("test_expert", None)
    assert dict(make_rules())["test_expert"] is None
    assert dict(make_rules({"test_expert": "data"}))["test_expert"] == "data"


@pytest.mark.parametrize("tied", [True, False])
def test_lm_head_gives_float32_logits_accumulated_in_float32(tied):
    """bf16 activations and weights, float32 logits: every logit equals the float32 dot product
    of the bf16-rounded hidden state and head weights. A head that accumulated (or returned) in
    bf16 would be off by bf16's rounding, ~0.4% of each logit, far above the tolerance here."""
    config = jaxformer.load_model_config("tiny-llama", vocab_size=200, dtype="bfloat16",
                                         tie_embeddings=tied)
    model = jaxformer.build_model(config, rngs=nnx.Rngs(0))
    out = model(jnp.asarray(np.random.default_rng(2).integers(0, 200, (2, 7))))
    assert out.logits.dtype == jnp.float32 and out.last_hidden_state.dtype == jnp.bfloat16
    weights = (model.embed.embedding[...].T if tied else model.lm_head.kernel[...])[:, :200]
    hidden = np.asarray(out.last_hidden_state.astype(jnp.float32), np.float64)
    reference = hidden @ np.asarray(weights.astype(jnp.bfloat16).astype(jnp.float32), np.float64)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(np.asarray(out.logits), reference, atol=2e-5 * scale, rtol=0)
    rounded = np.asarray(jnp.asarray(reference, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32))
    assert np.abs(rounded - reference).max() > 10 * 2e-5 * scale  # what bf16 logits would miss


def test_model_output_is_a_pytree_with_hf_field_names():
    from jaxformer.models import ModelOutput

    out = ModelOutput(logits=jnp.ones((1, 2, 3)), aux={"load_balancing": jnp.float32(0.5)})
    leaves, treedef = jax.tree.flatten(out)
    assert len(leaves) == 2  # unset fields are empty subtrees
    assert jax.tree.unflatten(treedef, leaves).aux["load_balancing"] == 0.5
    doubled = jax.jit(lambda o: jax.tree.map(lambda x: 2 * x, o))(out)
    assert isinstance(doubled, ModelOutput) and float(doubled.logits[0, 0, 0]) == 2.0
    names = {f.name for f in dataclasses.fields(ModelOutput)}
    assert {"last_hidden_state", "pooler_output", "seq_relationship_logits", "start_logits",
            "end_logits", "logits_per_text", "logits_per_image", "text_embeds",
            "image_embeds"} <= names
