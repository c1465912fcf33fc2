"""Norms and feed-forward layers against their formulas written in numpy (float64)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.nn import FeedForward, LayerNorm, RMSNorm, make_norm


def randomise(module, seed):
    """Replace every parameter with random values so scale/bias are not the trivial 1/0."""
    rng = np.random.default_rng(seed)
    for _, variable in nnx.iter_graph(module):
        if isinstance(variable, nnx.Param):
            variable[...] = jnp.asarray(rng.standard_normal(variable[...].shape), variable[...].dtype)
    return module


def inputs(seed, shape=(2, 5, 16), offset=3.0):
    # a non-zero mean and a large spread, so a missing centring or eps shows up
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2.0 + offset).astype(np.float32)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-12, 0.5])
def test_layernorm(use_bias, eps):
    norm = randomise(LayerNorm(16, eps=eps, use_bias=use_bias, rngs=nnx.Rngs(0)), 1)
    assert (norm.bias is None) == (not use_bias)
    x = inputs(2)
    got = np.asarray(norm(jnp.asarray(x)))
    h = x.astype(np.float64)
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)  # biased variance, as in the paper and torch
    want = (h - mean) / np.sqrt(var + eps) * np.asarray(norm.scale[...])
    if use_bias:
        want = want + np.asarray(norm.bias[...])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eps", [1e-6, 1e-5, 0.5])
def test_rmsnorm(eps):
    norm = randomise(RMSNorm(16, eps=eps, rngs=nnx.Rngs(0)), 3)
    x = inputs(4)
    got = np.asarray(norm(jnp.asarray(x)))
    h = x.astype(np.float64)
    want = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + eps) * np.asarray(norm.scale[...])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_norms_keep_dtype_and_make_norm():
    x = jnp.asarray(inputs(5)).astype(jnp.bfloat16)
    assert LayerNorm(16, rngs=nnx.Rngs(0))(x).dtype == jnp.bfloat16
    assert RMSNorm(16, rngs=nnx.Rngs(0))(x).dtype == jnp.bfloat16
    assert isinstance(make_norm("rmsnorm", 16, eps=1e-6, rngs=nnx.Rngs(0)), RMSNorm)
    assert isinstance(make_norm("layernorm", 16, eps=1e-6, use_bias=False, rngs=nnx.Rngs(0)), LayerNorm)
    with pytest.raises(ValueError, match="batchnorm"):
        make_norm("batchnorm", 16, eps=1e-6, rngs=nnx.Rngs(0))


def gelu_erf(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def gelu_tanh(x):  # Hendrycks & Gimpel's approximation, GPT-2's "gelu_new"
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def relu(x):
    return np.maximum(x, 0.0)


def silu(x):
    return x / (1.0 + np.exp(-x))


def dense(x, linear):
    y = np.tensordot(x, np.asarray(linear.kernel[...], np.float64), axes=1)
    return y + np.asarray(linear.bias[...]) if linear.bias is not None else y


@pytest.mark.parametrize("activation,fn", [("gelu", gelu_erf), ("gelu_tanh", gelu_tanh),
                                           ("relu", relu), ("silu", silu)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_feedforward(activation, fn, use_bias):
    ffn = randomise(FeedForward(16, 40, activation=activation, use_bias=use_bias, rngs=nnx.Rngs(0)), 6)
    assert ffn.gate is None
    x = inputs(7, offset=0.0)
    got = np.asarray(ffn(jnp.asarray(x)))
    want = dense(fn(dense(x.astype(np.float64), ffn.up)), ffn.down)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_gelu_variants_differ():
    """erf and tanh GELU are different functions (about 1e-3 apart near |x| = 2): a model loading
    GPT-2 weights must use the tanh one, BERT the erf one."""
    x = np.linspace(-4, 4, 101)
    assert np.abs(gelu_erf(x) - gelu_tanh(x)).max() > 1e-4
    a = FeedForward(1, 1, activation="gelu", use_bias=False, rngs=nnx.Rngs(0))
    b = FeedForward(1, 1, activation="gelu_tanh", use_bias=False, rngs=nnx.Rngs(0))
    for ffn in (a, b):
        ffn.up.kernel[...] = jnp.ones((1, 1))
        ffn.down.kernel[...] = jnp.ones((1, 1))
    xs = jnp.asarray(x, jnp.float32)[:, None]
    np.testing.assert_allclose(np.asarray(a(xs))[:, 0], gelu_erf(x), atol=1e-6)
    np.testing.assert_allclose(np.asarray(b(xs))[:, 0], gelu_tanh(x), atol=1e-6)


@pytest.mark.parametrize("activation,fn", [("swiglu", silu), ("geglu", gelu_erf), ("reglu", relu)])
def test_gated_feedforward(activation, fn):
    """Shazeer 2020: FFN_SwiGLU(x) = (Swish(x W) * (x V)) W2 -- Llama's down(silu(gate(x)) * up(x))."""
    ffn = randomise(FeedForward(16, 40, activation=activation, use_bias=False, rngs=nnx.Rngs(0)), 8)
    assert ffn.gate is not None and ffn.up.bias is None
    x = inputs(9, offset=0.0).astype(np.float64)
    got = np.asarray(ffn(jnp.asarray(x, jnp.float32)))
    want = dense(fn(dense(x, ffn.gate)) * dense(x, ffn.up), ffn.down)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="swiglu"):
        FeedForward(16, 40, activation="swish", rngs=nnx.Rngs(0))
