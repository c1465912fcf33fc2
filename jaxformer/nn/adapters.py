"""A model's LoRA adapters by module path: its linear layers, their kernels' geometry, and
reading or setting the adapter (`jaxformer.nn.lora.LoRA`) each one carries.

    weights = adapter_weights(model)        # {"layers/0/attention/query": Adapter(a, b, alpha)}
    set_adapters(model, weights)            # exactly these adapters, replacing any others

Fine-tuning attaches and merges adapters with these (`jaxformer.finetune.lora`); the HF importer
reads and writes them in peft's layout (`jaxformer.interop.adapters`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.nn.linear import Linear
from jaxformer.nn.lora import LoRA
from jaxformer.nn.quantized import QuantizedLinear

LINEARS = (Linear, QuantizedLinear)


@dataclasses.dataclass
class Adapter:
    """One layer's adapter: a [*in, r], b [r, *out] (numpy or jax), scaling = alpha / r."""

    a: object
    b: object
    alpha: float

    @property
    def rank(self) -> int:
        return self.a.shape[-1]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def path_of(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def linear_modules(model: nnx.Module) -> dict[str, nnx.Module]:
    """Every Linear / QuantizedLinear of the model by path."""
    return {path_of(p): m for p, m in nnx.iter_modules(model) if isinstance(m, LINEARS)}


def lora_modules(model: nnx.Module) -> dict[str, nnx.Module]:
    """The linear layers that carry an adapter, by path."""
    return {p: m for p, m in linear_modules(model).items() if getattr(m, "lora", None) is not None}


def geometry(module) -> dict:
    """Shapes and logical axis names of a linear layer's kernel: lead (a scanned stack's layers
    axis, or nothing), in and out."""
    if isinstance(module, QuantizedLinear):
        first = getattr(module, module.part_names[0])
        names = first.get_metadata().get("out_sharding") or ()
        lead = 1 if names and names[0] == "layers" else 0
        shape = first.get_value().shape[:lead]
        return dict(lead=shape, lead_axes=("layers",) * lead, in_shape=module.in_shape,
                    out_shape=module.out_shape, in_axes=None, out_axes=None,
                    param_dtype=jnp.float32, dtype=module.dtype)
    kernel = module.kernel
    value = kernel.get_value()
    names = tuple(kernel.get_metadata().get("out_sharding") or (None,) * value.ndim)
    lead = 1 if names and names[0] == "layers" else 0
    n_in = module.num_in
    return dict(lead=value.shape[:lead], lead_axes=names[:lead],
                in_shape=value.shape[lead:lead + n_in], out_shape=value.shape[lead + n_in:],
                in_axes=names[lead:lead + n_in], out_axes=names[lead + n_in:],
                param_dtype=value.dtype, dtype=module.dtype)


def new_lora(module, rank, alpha, *, dropout=0.0, dtype=None, index=0, rngs=None, a=None, b=None,
             num_adapters=None) -> LoRA:
    """A `LoRA` shaped for `module`'s kernel (its layers axis, input and output axes); `dtype`
    sets the adapter's compute and parameter dtype (default: the layer's)."""
    g = geometry(module)
    param_dtype = jnp.dtype(dtype) if dtype else g["param_dtype"]
    return LoRA(g["in_shape"], g["out_shape"], rank, alpha=alpha, dropout_rate=dropout,
                lead=g["lead"], lead_axes=g["lead_axes"], in_axes=g["in_axes"],
                out_axes=g["out_axes"], num_adapters=num_adapters,
                dtype=jnp.dtype(dtype) if dtype else g["dtype"], param_dtype=param_dtype,
                index=index, rngs=rngs, a=a, b=b)


def adapter_weights(model: nnx.Module) -> dict[str, Adapter]:
    """{path: Adapter} of the model's (single, unstacked) adapters, as numpy arrays."""
    out = {}
    for path, module in lora_modules(model).items():
        lora = module.lora
        if lora.num_adapters:
            raise ValueError(f"{path} holds {lora.num_adapters} stacked adapters, not one")
        out[path] = Adapter(np.asarray(jax.device_get(lora.a.get_value())),
                            np.asarray(jax.device_get(lora.b.get_value())), lora.alpha)
    return out


def set_adapters(model: nnx.Module, weights: dict[str, Adapter], *, dtype: str | None = None) -> None:
    """Give the model exactly these adapters (replacing any it had): each path must name one
    of its linear layers and each factor fit that layer's kernel."""
    linears = linear_modules(model)
    unknown = sorted(set(weights) - set(linears))
    if unknown:
        raise ValueError(f"adapter for {unknown[0]}, which is not a linear layer of this model")
    for path, module in linears.items():
        if getattr(module, "lora", None) is not None:
            del module.lora
    for index, (path, w) in enumerate(weights.items()):
        module = linears[path]
        module.lora = new_lora(module, w.rank, w.alpha, dtype=dtype, index=index,
                               a=jnp.asarray(w.a), b=jnp.asarray(w.b))
