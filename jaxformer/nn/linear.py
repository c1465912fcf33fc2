"""A dense layer over several input and output axes at once.

Attention projections keep heads as their own axis (`[embed, heads, head_dim]`) so that the head
axis can be sharded by name; a plain 2-D kernel would hide it. One class covers both cases.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.lora import add_update
from jaxformer.nn.params import Initializer, normal, param, zeros
from jaxformer.nn.sharding import gathered


class Linear(nnx.Module):
    """y = x @ W + b, contracting the last `len(in_shape)` axes of x.

    kernel: [*in_shape, *out_shape], named `in_axes + out_axes`; bias: [*out_shape].
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        *,
        in_axes: Sequence[str | None],
        out_axes: Sequence[str | None],
        use_bias: bool = True,
        init: Initializer | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        out_dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        self.num_in = len(in_shape)
        self.dtype = dtype
        # out_dtype float32 with a bf16 `dtype`: bf16 products accumulated in float32 (LM heads).
        self.out_dtype = out_dtype
        self.kernel_axes = tuple(in_axes) + tuple(out_axes)
        self.kernel = param(
            rngs.params(), init or normal(0.02), in_shape + out_shape, tuple(in_axes) + tuple(out_axes),
            param_dtype,
        )
        self.bias_axes = tuple(out_axes)
        self.bias = param(rngs.params(), zeros, out_shape, out_axes, param_dtype) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = gathered(self.kernel[...].astype(self.dtype), self.kernel_axes)
        # Leading axes flattened into one: with [batch, time, ...] kept apart, XLA:CPU computes the
        # kernel gradient through a fused elementwise+transpose copy that is ~10x slower than the
        # matmul itself (a 4-layer char model trained 1.6x slower per step).
        lead = x.shape[:x.ndim - self.num_in]
        y = jnp.tensordot(x.astype(self.dtype).reshape(-1, *x.shape[len(lead):]), kernel,
                          axes=self.num_in, preferred_element_type=self.out_dtype)
        y = y.reshape(*lead, *y.shape[1:])
        if self.bias is not None:
            y = y + gathered(self.bias[...].astype(y.dtype), self.bias_axes)
        # A LoRA adapter attached by `jaxformer.finetune` (the `lora` attribute; none by default).
        return add_update(self, x, y)
