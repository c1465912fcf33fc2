"""A linear layer whose kernel is stored quantized (int8, int4 or NF4: `qformats.py`) and
dequantized on the fly, inside the compiled program, for each matmul.

`QuantizedLinear.from_linear(linear, "nf4")` replaces a `Linear` with the same function (up to
the format's rounding): the kernel's arrays become `QuantizedWeight` variables (not `nnx.Param`,
so no train filter selects them: a quantized base is frozen), the bias stays a parameter, and a
LoRA adapter may hang off it as on a `Linear` (QLoRA).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn import qformats
from jaxformer.nn.lora import add_update


class QuantizedWeight(nnx.Variable):
    """The stored arrays of a quantized kernel (codes, scales): frozen, never trained."""


def _lead(kernel: nnx.Variable, num_in: int, out_ndim: int) -> int:
    return kernel.get_value().ndim - num_in - out_ndim


class QuantizedLinear(nnx.Module):
    """y = x @ dequantize(W) + b over the last `len(in_shape)` axes of x, like `Linear`.

    The kernel [*lead, *in_shape, *out_shape] is kept as a matrix [*lead, prod(in), prod(out)]
    quantized along its input axis; `lead` axes (a scanned stack's layers) are kept in front.
    """

    def __init__(self, parts: dict, *, fmt: str, in_shape, out_shape, group_size: int,
                 bias: nnx.Param | None, dtype, out_dtype=None, lead_axes=()):
        self.fmt, self.group_size = fmt, group_size
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.num_in = len(self.in_shape)
        self.dtype, self.out_dtype = dtype, out_dtype
        for name, value in parts.items():
            axes = tuple(lead_axes) + (None,) * (value.ndim - len(lead_axes))
            setattr(self, name, QuantizedWeight(value, out_sharding=axes, eager_sharding=False))
        self.part_names = tuple(parts)
        self.bias = bias

    @classmethod
    def from_linear(cls, linear, fmt: str, *, group_size: int = 64) -> "QuantizedLinear":
        """A quantized copy of `linear` (its LoRA adapter, if any, carried over)."""
        kernel = linear.kernel
        names = kernel.get_metadata().get("out_sharding") or ()
        value = kernel.get_value()
        lead = 1 if names and names[0] == "layers" else 0
        in_shape = value.shape[lead:lead + linear.num_in]
        out_shape = value.shape[lead + linear.num_in:]
        matrix = value.reshape(*value.shape[:lead], math.prod(in_shape), math.prod(out_shape))
        module = cls(qformats.quantize(matrix, fmt, group_size), fmt=fmt, in_shape=in_shape,
                     out_shape=out_shape, group_size=group_size, bias=linear.bias,
                     dtype=linear.dtype, out_dtype=linear.out_dtype,
                     lead_axes=("layers",) if lead else ())
        if getattr(linear, "lora", None) is not None:
            module.lora = linear.lora
        return module

    def parts(self) -> dict:
        return {name: getattr(self, name)[...] for name in self.part_names}

    def dequantized_kernel(self, dtype=jnp.float32) -> jax.Array:
        """The kernel as `Linear` would hold it: [*lead, *in_shape, *out_shape]."""
        matrix = qformats.dequantize(self.parts(), self.fmt, dtype)
        lead = matrix.shape[:-2]
        return matrix.reshape(*lead, *self.in_shape, *self.out_shape)

    @property
    def num_weights(self) -> int:
        """Entries of the kernel it stores (every layer of a scanned stack)."""
        lead = getattr(self, self.part_names[0]).get_value().shape[:-2]
        return math.prod(lead) * math.prod(self.in_shape) * math.prod(self.out_shape)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the stored kernel (codes and scales), bias excluded."""
        return sum(getattr(self, name).get_value().nbytes for name in self.part_names)

    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:x.ndim - self.num_in]
        d_in = math.prod(self.in_shape)
        w = qformats.dequantize(self.parts(), self.fmt, self.dtype)  # [d_in, d_out], fused by XLA
        y = jnp.dot(x.astype(self.dtype).reshape(-1, d_in), w,
                    preferred_element_type=self.out_dtype)
        y = y.reshape(*lead, *self.out_shape)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return add_update(self, x, y)
