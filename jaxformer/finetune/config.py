"""The `finetune:` section of a run config: how the model is rewritten after it is built, where
its starting weights come from, and (unless `train.trainable` says otherwise) what trains.

    mode        what trains (the rest is frozen: no gradient, no optimizer state)
    full        everything (the default; nothing is rewritten)
    features    the head only (`head` patterns): feature extraction on a frozen body
    top_layers  the top `top_layers` blocks, the final norm and the head
    lora        LoRA adapters on the linear layers whose names match `lora_targets`
    soft_prompt `soft_prompt_tokens` trained virtual tokens before every input

`base`: the weights to start from: a HuggingFace directory (config.json + safetensors) or a
jaxformer run directory (its latest checkpoint; its tokenizer is reused), matched to the run's
model as `train.init_from` is (one path for both: `jaxformer.train.warm_start`). `quantize_base`
stores the frozen base as int8, int4 or nf4 (QLoRA: nf4 with `mode: lora` and
`lora_dtype: bfloat16`). `int8_training`: int8 matmuls in the forward and backward passes
(AQT-style quantized training through qwix) on the blocks' linear layers.
"""

import dataclasses

from jaxformer.errors import ConfigError

MODES = ("full", "features", "top_layers", "lora", "soft_prompt")
QUANTIZE = (None, "int8", "int4", "nf4")
DTYPES = (None, "float32", "bfloat16", "float16")


@dataclasses.dataclass
class FinetuneConfig:
    mode: str = "full"
    base: str | None = None
    head: list[str] = dataclasses.field(
        default_factory=lambda: ["lm_head/*", "classifier/*", "head/*"])
    top_layers: int = 1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    # Module names (the last part of a path: "query") or globs over module paths
    # ("layers/*/feed_forward/up"). The LoRA paper adapts the query and value projections.
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: ["query", "value"])
    lora_dtype: str | None = None  # the adapters' parameter dtype; None: the model's
    soft_prompt_tokens: int = 20
    quantize_base: str | None = None
    quantize_group_size: int = 64  # int4 groups / NF4 blocks along each kernel's input axis
    int8_training: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"finetune.mode={self.mode!r} is not one of {list(MODES)}")
        if self.quantize_base not in QUANTIZE:
            raise ConfigError(f"finetune.quantize_base={self.quantize_base!r} is not one of "
                              f"{list(QUANTIZE)}")
        if self.lora_dtype not in DTYPES:
            raise ConfigError(f"finetune.lora_dtype={self.lora_dtype!r} is not one of {list(DTYPES)}")
        for name in ("top_layers", "lora_rank", "soft_prompt_tokens", "quantize_group_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"finetune.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"finetune.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.mode == "lora" and not self.lora_targets:
            raise ConfigError("finetune.lora_targets is empty: name the layers to adapt, e.g. "
                              "[query, value]")
        if self.quantize_base and self.mode == "full":
            raise ConfigError(f"finetune.quantize_base={self.quantize_base} freezes the base in "
                              f"a quantized form; full fine-tuning would train it: use "
                              f"finetune.mode=lora (QLoRA) or another partial mode")
        if self.quantize_base and self.int8_training:
            raise ConfigError("finetune.int8_training and finetune.quantize_base both rewrite the "
                              "linear layers: choose one")

    def resolve(self, config) -> None:
        """Checks against the rest of a run config, then `train.trainable` set to this mode's
        selection unless the config chose one (anything but the default [Param])."""
        max_len = getattr(config.model, "max_seq_len", None)
        if self.mode == "soft_prompt" and max_len is not None:
            room = max_len - self.soft_prompt_tokens
            if config.train.seq_len > room:
                raise ConfigError(f"train.seq_len={config.train.seq_len} plus "
                                  f"finetune.soft_prompt_tokens={self.soft_prompt_tokens} exceeds "
                                  f"model.max_seq_len={max_len}: use train.seq_len<={room}")
        if self.mode != "full" and list(config.train.trainable) == ["Param"]:
            config.train.trainable = self.trainable(config.model)

    def trainable(self, model_config) -> list[str]:
        """The `train.trainable` entries this mode implies for a model config."""
        if self.mode == "lora":
            return ["LoRAParam"]
        if self.mode == "soft_prompt":
            return ["SoftPromptParam"]
        if self.mode == "features":
            return list(self.head)
        if self.mode == "top_layers":
            num_layers = getattr(model_config, "num_layers", None)
            if num_layers is None:
                raise ConfigError(f"finetune.mode=top_layers needs a model with num_layers; the "
                                  f"{model_config.family} family has none: list the layers in "
                                  f"train.trainable instead")
            if getattr(model_config, "scan_layers", False):
                raise ConfigError("finetune.mode=top_layers picks layers by path, which a scanned "
                                  "stack does not have: set model.scan_layers=false")
            if self.top_layers > num_layers:
                raise ConfigError(f"finetune.top_layers={self.top_layers} exceeds model.num_layers="
                                  f"{num_layers}")
            layers = [f"layers/{i}/*" for i in range(num_layers - self.top_layers, num_layers)]
            return layers + ["final_norm/*"] + list(self.head)
        return ["Param"]
