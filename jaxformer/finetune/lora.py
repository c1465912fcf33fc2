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

import fnmatch

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.errors import ConfigError
# Finding a model's linear layers and reading or setting their adapters sits under the HF
# importer, which reads peft's files; fine-tuning's names for them stay importable from here.
from jaxformer.nn.adapters import (LINEARS, Adapter, adapter_weights, geometry,  # noqa: F401
                                   linear_modules, lora_modules, new_lora, path_of, set_adapters)
from jaxformer.nn.quantized import QuantizedLinear


def matches(path: str, targets) -> bool:
    """peft's rule for names (the module's own name equals a target) plus globs over paths."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path, t) if any(c in t for c in "*?[/") else name == t
               for t in targets)


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
        module.lora = new_lora(module, rank, alpha, dropout=dropout, dtype=dtype, index=index,
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
        module.lora = new_lora(module, rank, 1.0, a=jnp.asarray(a), b=jnp.asarray(b),
                               num_adapters=n)
    return model


def trainable_count(model: nnx.Module) -> int:
    """Parameters in the model's adapters."""
    return sum(m.lora.num_params for m in lora_modules(model).values())
