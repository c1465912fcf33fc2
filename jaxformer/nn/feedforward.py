"""Position-wise feed-forward networks: W2 act(W1 x), or the gated form W2 (act(Wg x) * (Wu x))."""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.linear import Linear
from jaxformer.nn.params import Initializer, normal

# GELU "exact" is the erf form (BERT, ViT); "gelu_tanh" is the tanh approximation GPT-2 was trained
# with (HF's gelu_new). The gated variants follow Shazeer 2020, "GLU Variants Improve Transformer".
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    # x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with.
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}
# geglu_tanh gates with the tanh GELU: T5 v1.1's "gated-gelu" (HF's gelu_new).
GATED = {"swiglu": "silu", "geglu": "gelu", "geglu_tanh": "gelu_tanh", "reglu": "relu"}


class FeedForward(nnx.Module):
    """`activation` is one of gelu, gelu_tanh, relu, silu, or gated swiglu, geglu, geglu_tanh,
    reglu."""

    def __init__(self, d_model: int, hidden_dim: int, *, activation: str = "gelu",
                 use_bias: bool = True, init: Initializer | None = None,
                 out_init: Initializer | None = None, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS and activation not in GATED:
            raise ValueError(f"unknown activation {activation!r}: use one of "
                             f"{sorted(ACTIVATIONS) + sorted(GATED)}")
        self.gated = activation in GATED
        self.activation = GATED.get(activation, activation)
        init = init or normal(0.02)
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.up = Linear(d_model, hidden_dim, in_axes=("embed",), out_axes=("mlp",), init=init, **common)
        self.gate = (Linear(d_model, hidden_dim, in_axes=("embed",), out_axes=("mlp",), init=init,
                            **common) if self.gated else None)
        self.down = Linear(hidden_dim, d_model, in_axes=("mlp",), out_axes=("embed",),
                           init=out_init or init, **common)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h = act(self.gate(x)) * self.up(x) if self.gated else act(self.up(x))
        return self.down(h)

    def as_sublayer(self, x: jax.Array, ctx, cache):
        """The block's call: (output, no cache, no aux losses)."""
        return self(x), cache, {}
