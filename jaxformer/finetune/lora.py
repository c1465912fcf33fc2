"""LoRA on any model built from `Linear` layers: attach adapters by name, merge them into the base
and back out, read and write their weights, and stack several adapters for mixed batches.

    attach_lora(model, targets=["query", "value"], rank=8, alpha=16, rngs=nnx.Rngs(0))
    merge(model); unmerge(model)            # kernel += (alpha/r) A B, and back
    plain = merge_and_unload(model)         # the base model with the updates folded in
    weights = adapter_weights(model)        # {"layers/0/attention/query": Adapter(a, b, alpha)}
    stack_adapters(model, [weights_1, weights_2])   # then `with adapter_rows(ids): model(...)`

The modules are found by their paths in the model ("layers/0/attention/query"); a target is a
module name (the path's last part, as peft's `target_modules`) or a glob over the whole path.
"""

import dataclasses
import fnmatch

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.errors import ConfigError
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


def matches(path: str, targets) -> bool:
    """peft's rule for names (the module's own name equals a target) plus globs over paths."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path, t) if any(c in t for c in "*?[/") else name == t
               for t in targets)


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


def _new_lora(module, rank, alpha, *, dropout=0.0, dtype=None, index=0, rngs=None, a=None, b=None,
              num_adapters=None):
    g = geometry(module)
    param_dtype = jnp.dtype(dtype) if dtype else g["param_dtype"]
    return LoRA(g["in_shape"], g["out_shape"], rank, alpha=alpha, dropout_rate=dropout,
                lead=g["lead"], lead_axes=g["lead_axes"], in_axes=g["in_axes"],
                out_axes=g["out_axes"], num_adapters=num_adapters,
                dtype=jnp.dtype(dtype) if dtype else g["dtype"], param_dtype=param_dtype,
                index=index, rngs=rngs, a=a, b=b)


def attach_lora(model: nnx.Module, *, targets, rank: int, alpha: float, dropout: float = 0.0,
                dtype: str | None = None, rngs: nnx.Rngs) -> list[str]:
    """Give every linear layer whose path matches `targets` a fresh adapter (A drawn as peft
    draws it, B zero). Returns the adapted paths; a ConfigError if none matched."""
    linears = linear_modules(model)
    chosen = [p for p in linears if matches(p, targets)]
    if not chosen:
        names = sorted({p.rsplit("/", 1)[-1] for p in linears})
        raise ConfigError(f"finetune.lora_targets={list(targets)} match none of the model's "
                          f"linear layers; their names are {names}")
    for index, path in enumerate(chosen):
        module = linears[path]
        if getattr(module, "lora", None) is not None:
            raise ValueError(f"{path} already has a LoRA adapter")
        module.lora = _new_lora(module, rank, alpha, dropout=dropout, dtype=dtype, index=index,
                                rngs=rngs)
    return chosen


def _set_kernel(module, delta_sign: float) -> None:
    if isinstance(module, QuantizedLinear):
        raise ValueError("a quantized base cannot absorb an adapter exactly: dequantize it "
                         "(jaxformer.quantization.dequantize_model) before merging")
    kernel = module.kernel
    delta = module.lora.delta_kernel()
    kernel.set_value((kernel.get_value().astype(jnp.float32) + delta_sign * delta)
                     .astype(kernel.get_value().dtype))


def merge(model: nnx.Module) -> None:
    """Fold each adapter into its base kernel (W += (alpha/r) A B); the adapter then adds
    nothing until `unmerge`. Decoding from a merged model costs what the base costs."""
    for module in lora_modules(model).values():
        if not module.lora.merged:
            _set_kernel(module, 1.0)
            module.lora.merged = True


def unmerge(model: nnx.Module) -> None:
    """Take each merged adapter back out of its kernel (W -= (alpha/r) A B)."""
    for module in lora_modules(model).values():
        if module.lora.merged:
            _set_kernel(module, -1.0)
            module.lora.merged = False


def merge_and_unload(model: nnx.Module) -> nnx.Module:
    """A copy of the model with every adapter folded into its kernel and removed: the plain
    family model, which `hf.save` exports."""
    model = nnx.clone(model)
    for module in lora_modules(model).values():
        if not module.lora.merged:
            _set_kernel(module, 1.0)
        del module.lora
    return model


def remove_adapters(model: nnx.Module) -> nnx.Module:
    """A copy of the model without its adapters (unmerged ones simply dropped)."""
    model = nnx.clone(model)
    for module in lora_modules(model).values():
        if module.lora.merged:
            _set_kernel(module, -1.0)
        del module.lora
    return model


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
        module.lora = _new_lora(module, w.rank, w.alpha, dtype=dtype, index=index,
                                a=jnp.asarray(w.a), b=jnp.asarray(w.b))


def stack_adapters(model: nnx.Module, adapters: list[dict[str, Adapter]]) -> nnx.Module:
    """A copy of `model` serving several adapters at once: inside
    `with jaxformer.nn.lora.adapter_rows(ids):`, batch row i runs with `adapters[ids[i]]`
    (-1: the base alone). Ranks may differ (padded with zeros to the largest, which changes
    nothing); a layer an adapter does not touch gets zeros for it. Each adapter's scaling is
    folded into its B. Existing unmerged adapters of `model` are dropped."""
    if not adapters:
        raise ValueError("stack_adapters needs at least one adapter")
    model = remove_adapters(model)
    linears = linear_modules(model)
    paths = sorted({p for weights in adapters for p in weights})
    unknown = [p for p in paths if p not in linears]
    if unknown:
        raise ValueError(f"adapter for {unknown[0]}, which is not a linear layer of this model")
    for path in paths:
        module = linears[path]
        g = geometry(module)
        rank = max(w[path].rank for w in adapters if path in w)
        lead, n = tuple(g["lead"]), len(adapters)
        a = np.zeros((n, *lead, *g["in_shape"], rank), np.float32)
        b = np.zeros((n, *lead, rank, *g["out_shape"]), np.float32)
        for i, weights in enumerate(adapters):
            if path in weights:
                w = weights[path]
                a[i, ..., :w.rank] = np.asarray(w.a, np.float32)
                rows = (i,) + (slice(None),) * len(lead) + (slice(0, w.rank),)
                b[rows] = np.asarray(w.b, np.float32) * w.scaling
        # The adapter axis goes after the layers axis, so a scanned stack still slices first.
        a, b = np.moveaxis(a, 0, len(lead)), np.moveaxis(b, 0, len(lead))
        module.lora = _new_lora(module, rank, 1.0, a=jnp.asarray(a), b=jnp.asarray(b),
                                num_adapters=n)
    return model


def trainable_count(model: nnx.Module) -> int:
    """Parameters in the model's adapters."""
    return sum(m.lora.num_params for m in lora_modules(model).values())
