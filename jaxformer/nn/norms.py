"""LayerNorm (with or without bias) and RMSNorm, computed in float32 whatever the activation dtype."""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.params import ones, param, zeros
from jaxformer.nn.sharding import gathered


class LayerNorm(nnx.Module):
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (Ba et al. 2016)."""

    def __init__(self, dim: int, *, eps: float = 1e-5, use_bias: bool = True,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.eps = eps
        self.scale = param(rngs.params(), ones, (dim,), ("embed",), param_dtype)
        self.bias = param(rngs.params(), zeros, (dim,), ("embed",), param_dtype) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.astype(jnp.float32)
        mean = h.mean(-1, keepdims=True)
        var = jnp.square(h - mean).mean(-1, keepdims=True)
        scale = gathered(self.scale[...].astype(jnp.float32), ("embed",))
        h = (h - mean) * jax.lax.rsqrt(var + self.eps) * scale
        if self.bias is not None:
            h = h + gathered(self.bias[...].astype(jnp.float32), ("embed",))
        return h.astype(x.dtype)


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * scale (Zhang & Sennrich 2019), as Llama and T5 use it."""

    def __init__(self, dim: int, *, eps: float = 1e-6, param_dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.eps = eps
        self.scale = param(rngs.params(), ones, (dim,), ("embed",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.square(h).mean(-1, keepdims=True) + self.eps)
        return (h * gathered(self.scale[...].astype(jnp.float32), ("embed",))).astype(x.dtype)


def make_norm(kind: str, dim: int, *, eps: float, use_bias: bool = True,
              param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.Module:
    """`kind` is "layernorm" or "rmsnorm" (RMSNorm never has a bias)."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, use_bias=use_bias, param_dtype=param_dtype, rngs=rngs)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, param_dtype=param_dtype, rngs=rngs)
    raise ValueError(f"unknown norm {kind!r}: use 'layernorm' or 'rmsnorm'")
