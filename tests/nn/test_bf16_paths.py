"""bfloat16 compute keeps float32 where precision matters: the attention softmax, the norms, and
the logits the loss is taken from. Each is checked at a tolerance set by what bfloat16 rounding
alone costs, so that a missing float32 upcast fails.

bfloat16 has 8 significant bits: rounding a value to it moves it by at most 2**-8 of itself (half
a unit in the last place relative to the smallest value of its binade).

Mutations tried (then reverted), with what they did to the checks below on this machine:
- attention scores einsum without `preferred_element_type=float32` (softmax on bf16 scores):
  the attention weights' error rose from 3.5e-7 to 1.5e-2 (bound 1e-5);
- LayerNorm / RMSNorm computed in the input dtype: the error rose from 0.98 / 0.995 to 256 / 1.9
  times 2**-8 (bound 1.0);
- logits left in bfloat16 by the model and the loss (no `.astype(float32)` in `DecoderLM` and in
  `token_cross_entropy`, so log-softmax runs in bf16): the per-token loss of the bf16 model moved
  up to 0.030 nats from the float32 model's, against 0.002 with the upcasts (bound 0.006).
  Either upcast alone is also caught: the model's output dtype below, the loss's in
  test_train_loss.py (bf16 logits scored within 1e-5 of float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models import DecoderLM
from jaxformer.nn import kv_cache
from jaxformer.nn.attention_ops import cached_attention, einsum_attention
from jaxformer.nn.norms import LayerNorm, RMSNorm
from jaxformer.presets import load_model_config
from jaxformer.tasks.losses import token_cross_entropy

BF16_ROUNDING = 2.0**-8


def bf16_normal(seed, shape, scale=1.0, shift=0.0):
    return (jax.random.normal(jax.random.key(seed), shape) * scale + shift).astype(jnp.bfloat16)


def naive_softmax_weights(q, k, scale):
    """softmax(q k^T * scale) in float64 from the (bf16) inputs: [batch, heads, q_time, k_time]."""
    s = np.einsum("bthd,bshd->bhts", np.asarray(q, np.float64), np.asarray(k, np.float64)) * scale
    w = np.exp(s - s.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


@pytest.mark.parametrize("path", ["einsum", "cached"])
def test_attention_softmax_runs_in_float32_on_bf16_inputs(path):
    q, k, v = (bf16_normal(seed, (2, 16, 4, 32), scale=2.0) for seed in (1, 2, 3))
    scale = 32**-0.5
    if path == "einsum":
        _, weights = einsum_attention(q, k, v, scale=scale)
    else:
        cache = kv_cache.init_layer_cache(2, 16, 4, 32, jnp.bfloat16)
        positions = jnp.broadcast_to(jnp.arange(16), (2, 16))
        cache = kv_cache.write(cache, k, v, positions, jnp.ones((2, 16), jnp.int32))
        _, weights = cached_attention(q, cache.k, cache.v, scale=scale)
    assert weights.dtype == jnp.float32
    # float32 scores and softmax: float32 error (~4e-7); bf16 scores would be ~1e-2 off.
    np.testing.assert_allclose(np.asarray(weights, np.float64), naive_softmax_weights(q, k, scale),
                               rtol=0, atol=1e-5)


def naive_layernorm(x):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


def naive_rmsnorm(x):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("norm, reference", [(LayerNorm, naive_layernorm), (RMSNorm, naive_rmsnorm)])
def test_norms_of_bf16_inputs_are_correctly_rounded(norm, reference):
    """Computed in float32 and rounded once, a bf16 norm is within one rounding of the exact
    result. An offset mean (1.0) and spread (3.0) make a bf16 mean and variance visibly wrong."""
    x = bf16_normal(4, (4, 16, 64), scale=3.0, shift=1.0)
    out = norm(64, eps=1e-5, rngs=nnx.Rngs(0))(x)
    assert out.dtype == jnp.bfloat16
    exact = reference(np.asarray(x, np.float64))
    relative = np.abs(np.asarray(out, np.float64) - exact) / np.abs(exact)
    assert relative.max() <= BF16_ROUNDING * 1.001, relative.max() / BF16_ROUNDING


def in_dtype(model, dtype: str, attention_impl: str):
    """`model`'s float32 weights in a model that computes in `dtype`."""
    config = model.config.replace(dtype=dtype, attention_impl=attention_impl)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, nnx.state(model))


def per_token_loss(model, tokens) -> np.ndarray:
    """The training loss of each token (the train step's `token_cross_entropy`), float64."""
    graphdef, state = nnx.split(model)

    def losses(state, tokens):
        logits = nnx.merge(graphdef, state)(tokens[:, :-1]).logits
        return token_cross_entropy(logits, tokens[:, 1:])

    return np.asarray(jax.jit(losses)(state, tokens), np.float64)


@pytest.mark.parametrize("preset, attention_impl", [("tiny-llama", "xla"), ("tiny-gpt2", "einsum")])
def test_bf16_model_loss_per_token_is_float32_close(preset, attention_impl):
    """The bf16 model's per-token loss against the float32 model with the same weights. Each
    loss is about ln(256) = 5.5 nats, where one bf16 rounding of a log-probability is up to 0.016
    nats; with the float32 upcasts the two models differ by about 0.002."""
    config = load_model_config(preset)
    model = DecoderLM(config, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(5), (4, 33), 0, config.vocab_size)
    exact = per_token_loss(in_dtype(model, "float32", attention_impl), tokens)
    low = in_dtype(model, "bfloat16", attention_impl)
    bf16 = per_token_loss(low, tokens)
    assert np.abs(bf16 - exact).max() < 0.006, np.abs(bf16 - exact).max()
    assert not np.array_equal(bf16, exact)  # it did compute in bf16
    # The model hands float32 logits to the loss.
    assert jax.eval_shape(lambda t: low(t).logits, tokens).dtype == jnp.float32
