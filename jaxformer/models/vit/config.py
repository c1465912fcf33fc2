"""The Vision Transformer's configuration (Dosovitskiy et al. 2021; HF's ViTConfig)."""

import dataclasses

from jaxformer.models.base_config import Heads, ModelConfig
from jaxformer.models.validation import check_choice, check_compute, check_fraction, check_positive
from jaxformer.nn.feedforward import ACTIVATIONS

POOLER_ACTIVATIONS = ("tanh", "none")


@dataclasses.dataclass(frozen=True)
class ViTConfig(ModelConfig, Heads):
    """Sizes: image_size (square, pixels), patch_size, num_channels, D d_model, H num_heads,
    I mlp_dim, L num_layers. The sequence is [CLS] + (image_size / patch_size)^2 patches.

    num_labels: a classification head on the final [CLS] state (HF's ViTForImageClassification);
        0 for none (feature extraction, HF's ViTModel).
    pooler: HF ViTModel's pooler, dense + tanh on the final [CLS] state (`pooler_output`).
    pre_norm: a LayerNorm on the embeddings before the first block (CLIP's vision tower has it).
    patch_bias: a bias in the patch projection (ViT yes, CLIP no).
    Images of another size are accepted: the learned patch positions are resized by bicubic
    interpolation, exactly as HF's `interpolate_pos_encoding=True`.
    """

    family: str = "vit"
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    num_labels: int = 1000
    pooler: bool = False
    pooler_act: str = "tanh"  # tanh | none
    pre_norm: bool = False
    patch_bias: bool = True
    activation: str = "gelu"  # the erf GELU, as ViT was trained; CLIP uses quick_gelu
    norm_eps: float = 1e-12
    dropout: float = 0.0  # on embeddings and residual branches
    attention_impl: str = "xla"
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "auto"  # see models/layers.py: auto, none, keep_weights, dots_saveable, full

    def __post_init__(self):
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "pooler_act", POOLER_ACTIVATIONS)
        check_compute(self)
        check_positive(self, "image_size", "patch_size", "num_channels", "d_model", "num_layers",
                       "num_heads", "mlp_dim")
        if self.num_labels < 0:
            raise ValueError(f"model.num_labels must be 0 (no head) or positive, got {self.num_labels}")
        if self.image_size % self.patch_size:
            raise ValueError(f"model.image_size={self.image_size} is not a multiple of "
                             f"model.patch_size={self.patch_size}")
        if self.d_model % self.num_heads:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by "
                             f"model.num_heads={self.num_heads}")
        check_fraction(self, "dropout")

    @property
    def grid_size(self) -> int:
        """Patches along each side of a config-sized image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2
