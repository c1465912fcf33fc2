"""The ViT family's entry in the registry, with its sizes table for `jaxformer info` (parameters
are counted by the registry's default: every leaf of the abstract model)."""

from jaxformer.models.registry import Family, register_family
from jaxformer.models.vit.config import ViTConfig
from jaxformer.models.vit.model import ViT


def vit_sizes(c: ViTConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    head = f"{c.num_labels} labels" if c.num_labels else "no head (features)"
    return [
        ("P", "patch_size", c.patch_size, f"{c.image_size} px images: {c.num_patches} patches + [CLS]"),
        ("D", "d_model", c.d_model, ""),
        ("H", "num_heads", c.num_heads, f"head dim {c.head_size}"),
        ("I", "mlp_dim", c.mlp_dim, c.activation),
        ("L", "num_layers", c.num_layers, "pre-layernorm" + (", pooler" if c.pooler else "")),
        ("K", "num_labels", c.num_labels, head),
    ]


VIT = register_family(Family(
    name="vit", config_class=ViTConfig, model_class=ViT, default_task="image_classification",
    description="Vision Transformer (ViT): image classification and features", sizes=vit_sizes))
