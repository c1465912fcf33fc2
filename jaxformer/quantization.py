"""Weight-only quantization of a whole model for inference, in one call:

    qmodel = jaxformer.quantize(model, "nf4")        # or "int8", "int4" (group_size=64)
    generate(qmodel, prompts, 100)                   # matmuls dequantize on the fly

Every `Linear` of the model becomes a `QuantizedLinear` (formats in `jaxformer/nn/qformats.py`);
embeddings, norms and biases stay as they are, and so do the layers named in `skip` (by default
an untied LM head, whose rounding every logit would feel, as bitsandbytes and peft's QLoRA leave
it). Any LoRA adapters on the quantized layers are kept (QLoRA).
"""

import jax
from flax import nnx

from jaxformer.nn import qformats
from jaxformer.nn.linear import Linear
from jaxformer.nn.quantized import QuantizedLinear, QuantizedWeight

__all__ = ["FORMATS", "dequantize_model", "quantize", "weight_bytes"]

FORMATS = qformats.FORMATS


def _parent(model: nnx.Module, path: tuple):
    node = model
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def _matches(path: tuple, names) -> bool:
    text = "/".join(map(str, path))
    return any(text == n or text.endswith("/" + n) for n in names)


def quantize(model: nnx.Module, fmt: str, *, group_size: int = 64, skip=("lm_head",),
             copy: bool = True) -> nnx.Module:
    """The model with every `Linear` not named in `skip` (paths or their last parts) stored as
    `fmt` ("int8" per channel, "int4" group-wise, "nf4" blockwise with double quantization).
    `copy=False` rewrites `model` itself. Raises ValueError for an unknown format or a layer
    whose input size the group size does not divide."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown quantization format {fmt!r}: use one of {list(FORMATS)}")
    if copy:
        model = nnx.clone(model)
    targets = [(p, m) for p, m in nnx.iter_modules(model)
               if isinstance(m, Linear) and not _matches(p, skip)]
    if not targets:
        raise ValueError("the model has no linear layers to quantize")
    for path, linear in targets:
        try:
            quantized = QuantizedLinear.from_linear(linear, fmt, group_size=group_size)
        except ValueError as e:
            raise ValueError(f"{'/'.join(map(str, path))}: {e}") from None
        parent, name = _parent(model, path), path[-1]
        if isinstance(name, int):
            parent[name] = quantized
        else:
            setattr(parent, name, quantized)
    return model


def dequantize_model(model: nnx.Module) -> nnx.Module:
    """A copy with every `QuantizedLinear` turned back into a float32 `Linear` holding the
    dequantized kernel (what the quantized model computes, for merging adapters or export)."""
    model = nnx.clone(model)
    for path, q in [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, QuantizedLinear)]:
        kernel = q.dequantized_kernel(jax.numpy.float32)
        lead = kernel.ndim - len(q.in_shape) - len(q.out_shape)
        linear = nnx.eval_shape(lambda: Linear(
            q.in_shape, q.out_shape, in_axes=(None,) * len(q.in_shape),
            out_axes=(None,) * len(q.out_shape), use_bias=False, dtype=q.dtype,
            out_dtype=q.out_dtype, rngs=nnx.Rngs(0)))
        axes = ("layers",) * lead + (None,) * (kernel.ndim - lead)
        linear.kernel = nnx.Param(kernel, out_sharding=axes, eager_sharding=False)
        if q.bias is not None:
            linear.bias = nnx.data(q.bias)
        if getattr(q, "lora", None) is not None:
            linear.lora = q.lora
        parent, name = _parent(model, path), path[-1]
        setattr(parent, name, linear)
    return model


def weight_bytes(model: nnx.Module) -> dict[str, int]:
    """Bytes of the model's stored weights: {"params": float parameters (embeddings, norms,
    biases, unquantized kernels), "quantized": codes and scales, "total"}."""
    state = nnx.state(model)
    sizes = {"params": 0, "quantized": 0}
    for _, variable in nnx.to_flat_state(state):
        value = variable.get_value()
        if isinstance(variable, QuantizedWeight):
            sizes["quantized"] += value.nbytes
        elif isinstance(variable, nnx.Param):
            sizes["params"] += value.nbytes
    sizes["total"] = sizes["params"] + sizes["quantized"]
    return sizes
