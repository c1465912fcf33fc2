"""One base model serving many LoRA fine-tunes in the same batch (each row its own adapter).

    server = serve_adapters(base_model, ["adapters/legal", "adapters/poetry"], config.model)
    generate(server, prompts, 64, adapter_ids=[0, 1, -1, 0])    # -1: the base model alone

The adapters are stacked on a new leading axis of each adapted layer's A and B; the decode loop
is one compiled program whose per-row adapter ids are an input, and every adapted matmul gathers
its row's factors from the stack (`jaxformer.nn.lora.LoRA`). Each row gets exactly what its
adapter alone would give it; mixing tasks in a batch costs one extra small gather-matmul pair per
adapted layer, not a model per task.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.errors import UserError
from jaxformer.interop.adapters import read_adapter
from jaxformer.finetune.lora import stack_adapters
from jaxformer.nn.lora import LoRA


def stacked_count(model: nnx.Module) -> int | None:
    """How many adapters the model stacks (None: it has no stacked adapters)."""
    counts = {m.num_adapters for _, m in nnx.iter_modules(model) if isinstance(m, LoRA)}
    counts.discard(None)
    return max(counts) if counts else None


def serve_adapters(model: nnx.Module, adapters: list, model_config=None) -> nnx.Module:
    """A copy of `model` (a plain base, or one with adapters, which are dropped) holding every
    adapter in `adapters`: peft adapter directories (read onto this model's layers; needs
    `model_config`) or {path: Adapter} dicts as `jaxformer.finetune.adapter_weights` gives."""
    weights = []
    for adapter in adapters:
        if isinstance(adapter, (str, Path)):
            if model_config is None:
                raise ValueError("reading adapter directories needs the model's config")
            found, whole = read_adapter(adapter, model, model_config)
            if whole:
                raise UserError(f"{adapter} also replaces whole modules "
                                f"({'/'.join(map(str, next(iter(whole))))}); adapters served "
                                f"together can only differ in their LoRA weights")
            weights.append(found)
        else:
            weights.append(adapter)
    return stack_adapters(model, weights)


def check_adapter_ids(model: nnx.Module, adapter_ids, batch: int) -> jnp.ndarray:
    """The per-row ids as an int32 array; UserError for a wrong count or an unknown id."""
    count = stacked_count(model)
    if count is None:
        raise UserError("adapter_ids given, but the model stacks no adapters: build it with "
                        "jaxformer.generate.adapters.serve_adapters")
    ids = np.asarray(adapter_ids, np.int64)
    if ids.shape != (batch,):
        raise UserError(f"adapter_ids has {ids.size} entries for {batch} prompts: give one per prompt")
    bad = ids[(ids < -1) | (ids >= count)]
    if bad.size:
        raise UserError(f"adapter id {int(bad[0])} is out of range: the model stacks {count} "
                        f"adapters (ids 0..{count - 1}, -1 for the base)")
    return jnp.asarray(ids, jnp.int32)
