"""Fine-tuning: partial training modes, LoRA, soft prompts, QLoRA, adapters on disk.

    from jaxformer import finetune
    finetune.attach_lora(model, targets=["query", "value"], rank=8, alpha=16, rngs=nnx.Rngs(0))
    finetune.save_adapter("out/adapter", model, config)      # peft's layout
    finetune.load_adapter(model, "out/adapter")

A run fine-tunes through its config's `finetune:` section (`FinetuneConfig`); the training
package applies it when it builds the run's model and starts from `finetune.base`'s weights
(`jaxformer.train.warm_start`).
"""

from jaxformer.interop.adapters import load_adapter, read_adapter, save_adapter
from jaxformer.finetune.config import FinetuneConfig
from jaxformer.finetune.lora import (Adapter, adapter_weights, attach_lora, lora_modules, merge,
                                     merge_and_unload, set_adapters, stack_adapters, unmerge)
from jaxformer.finetune.rewrite import apply_finetune, trainable_summary, unload
from jaxformer.finetune.soft_prompt import SoftPromptModel, SoftPromptParam

__all__ = ["Adapter", "FinetuneConfig", "SoftPromptModel", "SoftPromptParam", "adapter_weights",
           "apply_finetune", "attach_lora", "load_adapter", "lora_modules", "merge",
           "merge_and_unload", "read_adapter", "save_adapter", "set_adapters", "stack_adapters",
           "trainable_summary", "unload", "unmerge"]
