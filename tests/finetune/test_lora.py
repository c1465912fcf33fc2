"""LoRA: an adapter with B = 0 leaves the model unchanged; the update equals a naive
x W + b + (alpha / r) x A B; merge and unmerge return the base kernel within 1e-6; training
through the run's filter moves the adapters only (base bitwise unchanged, no optimizer state for
it); a scanned stack computes what the unrolled one does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.finetune import lora as L
from jaxformer.models import DecoderConfig, build_model
from jaxformer.models.layers import stack_layers
from jaxformer.nn.linear import Linear
from jaxformer.nn.lora import dropout_key
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state, model_graphdef
from jaxformer.train.step import make_train_step
from support.devices import ONE_DEVICE

GPT2ISH = DecoderConfig(vocab_size=61, d_model=48, num_layers=2, num_heads=4, max_seq_len=32,
                        vocab_pad_multiple=8, tie_embeddings=False)
LLAMAISH = DecoderConfig(vocab_size=61, d_model=48, num_layers=2, num_heads=4, num_kv_heads=2,
                         max_seq_len=32, position="rope", norm="rmsnorm", activation="swiglu",
                         use_bias=False, vocab_pad_multiple=1)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 61, (3, 11)), jnp.int32)


def randomize_b(model, seed=0, scale=0.2):
    for i, module in enumerate(L.lora_modules(model).values()):
        shape = module.lora.b.get_value().shape
        module.lora.b.set_value(scale * jax.random.normal(jax.random.key(seed + i), shape))


@pytest.mark.parametrize("config", [GPT2ISH, LLAMAISH], ids=["gpt2", "llama"])
def test_zero_b_equals_base_and_merge_unmerge_round_trips(config):
    model = build_model(config, rngs=nnx.Rngs(0))
    base = model(TOKENS).logits
    kernels = {p: np.array(m.kernel.get_value()) for p, m in L.linear_modules(model).items()}
    adapted = L.attach_lora(model, targets=["query", "value", "down", "lm_head"], rank=4, alpha=8,
                            rngs=nnx.Rngs(1))
    # query, value, down in every layer, and the head when it has its own matrix
    assert len(adapted) == 3 * config.num_layers + (0 if config.tie_embeddings else 1)
    np.testing.assert_array_equal(np.asarray(model(TOKENS).logits), np.asarray(base))

    randomize_b(model)
    adapted_out = np.asarray(model(TOKENS).logits)
    assert np.abs(adapted_out - np.asarray(base)).max() > 1e-2
    L.merge(model)
    np.testing.assert_allclose(np.asarray(model(TOKENS).logits), adapted_out, atol=2e-5)
    L.unmerge(model)
    for path, module in L.linear_modules(model).items():
        np.testing.assert_allclose(np.asarray(module.kernel.get_value()), kernels[path], atol=1e-6)
    np.testing.assert_allclose(np.asarray(model(TOKENS).logits), adapted_out, atol=1e-6)
    plain = L.merge_and_unload(model)
    assert not L.lora_modules(plain)
    np.testing.assert_allclose(np.asarray(plain(TOKENS).logits), adapted_out, atol=2e-5)


def test_update_matches_a_naive_formula_on_a_multi_axis_kernel():
    # The attention output projection contracts two axes ([heads, head_dim] -> embed).
    linear = Linear((4, 6), 10, in_axes=("heads", "head_dim"), out_axes=("embed",),
                    rngs=nnx.Rngs(0))
    linear.bias.set_value(jax.random.normal(jax.random.key(9), (10,)))
    model = nnx.Dict(out=linear)
    L.attach_lora(model, targets=["out"], rank=3, alpha=12, rngs=nnx.Rngs(2))
    randomize_b(model)
    x = np.random.default_rng(1).normal(size=(2, 5, 4, 6)).astype(np.float32)
    w = np.asarray(linear.kernel.get_value()).reshape(24, 10)
    a = np.asarray(linear.lora.a.get_value()).reshape(24, 3)
    b = np.asarray(linear.lora.b.get_value())
    flat = x.reshape(2, 5, 24)
    want = flat @ w + np.asarray(linear.bias.get_value()) + (12 / 3) * (flat @ a) @ b
    np.testing.assert_allclose(np.asarray(linear(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)
    # A is drawn as peft draws lora_A: uniform within 1/sqrt(fan_in).
    assert np.abs(a).max() <= 1 / np.sqrt(24) and np.abs(a).max() > 0.5 / np.sqrt(24)


def test_dropout_only_with_a_key():
    model = build_model(GPT2ISH, rngs=nnx.Rngs(0))
    L.attach_lora(model, targets=["query"], rank=4, alpha=8, dropout=0.5, rngs=nnx.Rngs(1))
    randomize_b(model)
    plain = np.asarray(model(TOKENS).logits)
    np.testing.assert_array_equal(np.asarray(model(TOKENS).logits), plain)
    with dropout_key(jax.random.key(0)):
        dropped = np.asarray(model(TOKENS).logits)
    assert np.abs(dropped - plain).max() > 1e-4


def test_scanned_stack_computes_what_the_unrolled_one_does():
    unrolled = build_model(GPT2ISH, rngs=nnx.Rngs(0))
    L.attach_lora(unrolled, targets=["query", "up"], rank=4, alpha=8, rngs=nnx.Rngs(1))
    randomize_b(unrolled)
    scanned = nnx.eval_shape(lambda: build_model(GPT2ISH.replace(scan_layers=True), rngs=nnx.Rngs(0)))
    L.attach_lora(scanned, targets=["query", "up"], rank=4, alpha=8, rngs=nnx.Rngs(1))
    graphdef, abstract = nnx.split(scanned)
    state = stack_layers(nnx.state(unrolled))
    model = nnx.merge(graphdef, state)
    np.testing.assert_allclose(np.asarray(model(TOKENS).logits),
                               np.asarray(unrolled(TOKENS).logits), atol=2e-5)


TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=16",
        "train.seq_len=16", "model.vocab_size=65", "optimizer.warmup_steps=0",
        "optimizer.lr=1e-2", "finetune.mode=lora", "finetune.lora_rank=2"]


def batch(seed, rows=4, time=16, vocab=65):
    tokens = np.random.default_rng(seed).integers(0, vocab, (rows, time + 1)).astype(np.int32)
    return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
            "positions": np.tile(np.arange(time, dtype=np.int32), (rows, 1)),
            "segment_ids": np.ones((rows, time), np.int32),
            "loss_mask": np.ones((rows, time), np.float32)}


@pytest.mark.parametrize("extra", [[], ["finetune.lora_dropout=0.1"], ["model.scan_layers=true"]],
                         ids=["plain", "dropout", "scanned"])
def test_only_adapters_train(extra):
    config = load_config(None, TINY + extra)
    assert config.train.trainable == ["LoRAParam"]
    state = create_state(config)
    trained = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(state.params)}
    assert trained and all(p.rsplit("/", 2)[-2:] in (["lora", "a"], ["lora", "b"]) for p in trained)
    frozen_before = jax.tree.map(np.array, state.frozen)
    lora_before = jax.tree.map(np.array, state.params)
    # Adam's moments exist for the adapters only.
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim > 0]
    assert sum(x.size for x in moments) == 2 * sum(x.size for x in jax.tree.leaves(state.params))
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    for seed in range(3):
        state, metrics = step(state, batch(seed))
    assert np.isfinite(float(metrics["loss"]))
    for before, after in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(state.frozen), strict=True):
        np.testing.assert_array_equal(np.asarray(after), before)
    moved = [np.abs(np.asarray(a) - b).max() for a, b in
             zip(jax.tree.leaves(state.params), jax.tree.leaves(lora_before))]
    assert min(moved) > 0  # every A and every B moved


def test_targets_that_match_nothing_name_the_layers():
    model = build_model(GPT2ISH, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match=r"match none.*'query'"):
        L.attach_lora(model, targets=["q_proj"], rank=2, alpha=4, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="finetune.lora_rank must be positive"):
        load_config(None, TINY + ["finetune.lora_rank=0"])
