"""CLIP's configuration (Radford et al. 2021; HF's CLIPConfig): a text tower, an image tower (a
ViT) and the shared embedding space they are projected into."""

import dataclasses
import math

from jaxformer.models.base_config import ModelConfig
from jaxformer.models.validation import check_choice, check_compute
from jaxformer.models.vit.config import ViTConfig
from jaxformer.nn.feedforward import ACTIVATIONS

TOWERS = ("text", "vision")


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """A causal pre-LN transformer over token ids, pooled at the end-of-text token.

    eos_token_id: the pooled position, as HF defines it: with eos_token_id == 2 (what OpenAI's
    published configs say) the position of the largest token id in each row (the end-of-text token
    has the largest id in OpenAI's vocabulary); otherwise the first occurrence of eos_token_id."""

    vocab_size: int = 49408
    d_model: int = 512
    num_layers: int = 12
    num_heads: int = 8
    mlp_dim: int = 2048
    max_seq_len: int = 77
    eos_token_id: int = 2
    activation: str | None = None  # None: CLIPConfig.activation
    norm_eps: float | None = None  # None: CLIPConfig.norm_eps


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """The image tower's sizes: a ViT with a LayerNorm before the first block, no patch bias,
    no head; its final norm applies to the [CLS] state only."""

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    activation: str | None = None  # None: CLIPConfig.activation
    norm_eps: float | None = None  # None: CLIPConfig.norm_eps


@dataclasses.dataclass(frozen=True)
class CLIPConfig(ModelConfig):
    """`text` and `vision` give the towers' sizes. `activation` and `norm_eps` are both towers'
    unless a tower sets its own (`text.activation`, `vision.norm_eps`, ...: HF's text_config and
    vision_config each have a hidden_act and a layer_norm_eps), so configs that set them once
    still mean one of each; `tower_activation(tower)` and `tower_norm_eps(tower)` give what a
    tower uses. projection_dim: the shared embedding width. The logit scale (inverse temperature)
    is a learned scalar parameter stored as its log, initialised to log(1 / 0.07), and clamped at
    `max_logit_scale` (100) in the forward pass, as CLIP clips it in training."""

    family: str = "clip"
    text: CLIPTextConfig = dataclasses.field(default_factory=CLIPTextConfig)
    vision: CLIPVisionConfig = dataclasses.field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)
    max_logit_scale: float = 100.0
    activation: str = "quick_gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_impl: str = "xla"
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "auto"  # see models/layers.py: auto, none, keep_weights, dots_saveable, full

    def __post_init__(self):
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_compute(self)
        for section in TOWERS:
            tower = getattr(self, section)
            for field in dataclasses.fields(tower):
                value = getattr(tower, field.name)
                if field.name not in ("eos_token_id", "activation", "norm_eps") and value <= 0:
                    raise ValueError(f"model.{section}.{field.name} must be positive, got {value}")
            if tower.activation is not None and tower.activation not in ACTIVATIONS:
                raise ValueError(f"model.{section}.activation={tower.activation!r} is not one of "
                                 f"{list(ACTIVATIONS)}")
        for name, value in [("norm_eps", self.norm_eps), ("text.norm_eps", self.text.norm_eps),
                            ("vision.norm_eps", self.vision.norm_eps)]:
            if value is not None and value <= 0:
                raise ValueError(f"model.{name} must be positive, got {value}")
        if self.text.d_model % self.text.num_heads:
            raise ValueError(f"model.text.d_model={self.text.d_model} is not divisible by "
                             f"model.text.num_heads={self.text.num_heads}")
        if not 0 <= self.text.eos_token_id < self.text.vocab_size:
            raise ValueError(f"model.text.eos_token_id={self.text.eos_token_id} is outside the "
                             f"vocabulary (model.text.vocab_size={self.text.vocab_size})")
        if self.projection_dim <= 0 or self.max_logit_scale <= 0:
            raise ValueError("model.projection_dim and model.max_logit_scale must be positive")
        self.vision_config()  # the ViT's own checks (patch size dividing the image, heads)

    def tower_activation(self, tower: str) -> str:
        """The activation of the "text" or "vision" tower's feed-forward layers."""
        return getattr(self, tower).activation or self.activation

    def tower_norm_eps(self, tower: str) -> float:
        """The epsilon of the "text" or "vision" tower's LayerNorms."""
        own = getattr(self, tower).norm_eps
        return self.norm_eps if own is None else own

    def vision_config(self) -> ViTConfig:
        """The image tower as a ViT config."""
        v = self.vision
        return ViTConfig(
            image_size=v.image_size, patch_size=v.patch_size, num_channels=v.num_channels,
            d_model=v.d_model, num_layers=v.num_layers, num_heads=v.num_heads, mlp_dim=v.mlp_dim,
            num_labels=0, pooler=False, pre_norm=True, patch_bias=False,
            activation=self.tower_activation("vision"), norm_eps=self.tower_norm_eps("vision"),
            **self.compute_settings())
