"""The model as a run's `finetune:` section rewrites it after the family builds it, and back.

    model = apply_finetune(build_model(config.model, rngs=rngs), config, rngs)
    plain = unload(model)          # adapters merged, base dequantized, soft prompt dropped

The rewrite is pure and deterministic given `rngs`, so the train state's creation (under jit,
sharded) and the abstract structure that checkpoints restore into agree.
"""

from flax import nnx

from jaxformer.finetune.lora import attach_lora, lora_modules, merge_and_unload
from jaxformer.finetune.soft_prompt import SoftPromptModel
from jaxformer.finetune.trainable import trainable_filter
from jaxformer.nn.quantized import QuantizedLinear
from jaxformer.quantization import dequantize_model, quantize

# The blocks' linear layers (by name) that int8 training quantizes; the embedding and the LM head
# stay in float, as AQT and qwix recipes leave them.
INT8_LAYERS = r".*/(query|key|value|out|up|gate|down)"


def apply_finetune(model: nnx.Module, config, rngs: nnx.Rngs) -> nnx.Module:
    """`model` rewritten as `config.finetune` says (unchanged for a plain full fine-tune)."""
    ft = getattr(config, "finetune", None)
    if ft is None:
        return model
    if ft.quantize_base:
        model = quantize(model, ft.quantize_base, group_size=ft.quantize_group_size, copy=False)
    if ft.mode == "lora":
        attach_lora(model, targets=ft.lora_targets, rank=ft.lora_rank, alpha=ft.lora_alpha,
                    dropout=ft.lora_dropout, dtype=ft.lora_dtype, rngs=rngs)
    if ft.mode == "soft_prompt":
        model = SoftPromptModel(model, ft.soft_prompt_tokens, rngs=rngs)
    if ft.int8_training:
        model = int8_training(model)
    return model


def int8_training(model: nnx.Module) -> nnx.Module:
    """AQT-style quantized training through qwix: the blocks' linear layers run int8 x int8
    matmuls (weights and activations quantized per channel, absmax) in the forward pass and
    int8 gradient matmuls in the backward pass; the parameters themselves stay float."""
    try:
        import qwix
    except ImportError:
        raise ImportError("finetune.int8_training needs qwix: pip install 'qwix>=0.1.8'") from None
    rule = qwix.QtRule(module_path=INT8_LAYERS, weight_qtype="int8", act_qtype="int8",
                       bwd_qtype="int8")
    # qwix rewrites the model's class so its matmuls are intercepted; nothing runs here.
    return qwix.quantize_model(model, qwix.QtProvider([rule]), skip_nnx_init=True)


def unload(model: nnx.Module) -> nnx.Module:
    """The plain family model a fine-tuned model computes: the soft prompt dropped, a quantized
    base dequantized (to float32), adapters merged into the kernels. A copy."""
    if isinstance(model, SoftPromptModel):
        model = model.unwrap()
    if any(isinstance(m, QuantizedLinear) for _, m in nnx.iter_modules(model)):
        model = dequantize_model(model)
    if lora_modules(model):
        model = merge_and_unload(model)
    unquantized = getattr(type(model), "_unquantized_type", None)  # qwix's int8-training class
    if unquantized is not None:
        model = nnx.clone(model)
        model.__class__ = unquantized
    return model


def trainable_summary(model: nnx.Module, trainable) -> dict:
    """{"trainable": parameters the filter selects, "total": every parameter, a quantized
    kernel counted by its weights (not its bytes), "fraction"}."""
    _, selected, rest = nnx.split(model, trainable_filter(trainable), ...)
    count = lambda state: sum(v.get_value().size for _, v in nnx.to_flat_state(state)
                              if isinstance(v, nnx.Param))
    trained = count(selected)
    quantized = sum(m.num_weights for _, m in nnx.iter_modules(model)
                    if isinstance(m, QuantizedLinear))
    total = trained + count(rest) + quantized
    return {"trainable": trained, "total": total, "fraction": trained / max(total, 1)}


__all__ = ["apply_finetune", "int8_training", "trainable_summary", "unload"]
