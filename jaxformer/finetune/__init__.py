"""Fine-tuning: partial training modes, LoRA, soft prompts, QLoRA, adapters on disk.

    from jaxformer import finetune
    finetune.attach_lora(model, targets=["query", "value"], rank=8, alpha=16, rngs=nnx.Rngs(0))
    finetune.save_adapter("out/adapter", model, config)      # peft's layout
    finetune.load_adapter(model, "out/adapter")

A run fine-tunes through its config's `finetune:` section (`FinetuneConfig`). Names are imported
lazily: `jaxformer.config` imports the config class while the training package is still loading.
"""

import importlib

from jaxformer.finetune.config import FinetuneConfig

_EXPORTS = {
    "Adapter": "lora", "adapter_weights": "lora", "attach_lora": "lora", "lora_modules": "lora",
    "merge": "lora", "merge_and_unload": "lora", "set_adapters": "lora",
    "stack_adapters": "lora", "unmerge": "lora",
    "SoftPromptModel": "soft_prompt", "SoftPromptParam": "soft_prompt",
    "apply_finetune": "rewrite", "trainable_summary": "rewrite", "unload": "rewrite",
    "load_adapter": "adapters", "save_adapter": "adapters", "read_adapter": "adapters",
    "load_base": "base", "create_from_base": "base",
}

__all__ = ["FinetuneConfig", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"jaxformer.finetune.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'jaxformer.finetune' has no attribute {name!r}")
