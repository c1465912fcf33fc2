"""The CLIP family's entry in the registry, with its sizes table for `jaxformer info` (parameters
are counted by the registry's default: every leaf of the abstract model)."""

from jaxformer.models.clip.config import CLIPConfig
from jaxformer.models.clip.model import CLIP
from jaxformer.models.registry import Family, register_family


def clip_sizes(c: CLIPConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    t, v = c.text, c.vision
    return [
        ("V", "text.vocab_size", t.vocab_size, f"context {t.max_seq_len} tokens"),
        ("Dt", "text.d_model", t.d_model, f"{t.num_layers} causal layers, {t.num_heads} heads, "
                                          f"mlp {t.mlp_dim} {c.tower_activation('text')}"),
        ("Dv", "vision.d_model", v.d_model, f"{v.num_layers} layers, {v.num_heads} heads, mlp "
                                            f"{v.mlp_dim} {c.tower_activation('vision')}, patch "
                                            f"{v.patch_size} of {v.image_size} px"),
        ("P", "projection_dim", c.projection_dim, f"logit scale clamped at {c.max_logit_scale:g}"),
    ]


CLIP_FAMILY = register_family(Family(
    name="clip", config_class=CLIPConfig, model_class=CLIP, default_task="contrastive",
    description="CLIP: contrastive text and image towers (zero-shot classification)",
    sizes=clip_sizes))
