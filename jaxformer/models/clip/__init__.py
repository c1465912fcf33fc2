"""The CLIP family (a text tower and a ViT in one embedding space), registered on import:

    config.py   CLIPConfig with its text and vision sections
    model.py    CLIP, its text tower, the contrastive loss and zero-shot logits
    family.py   the registry entry and the sizes table of `jaxformer info`
"""

from jaxformer.models.clip.config import TOWERS, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from jaxformer.models.clip.family import CLIP_FAMILY, clip_sizes
from jaxformer.models.clip.model import (CLIP, CLIPTextTransformer, contrastive_loss, eos_positions,
                                         make_text_block, normalise, zero_shot_logits)

__all__ = ["CLIP", "CLIPConfig", "CLIPTextConfig", "CLIPTextTransformer", "CLIPVisionConfig",
           "CLIP_FAMILY", "TOWERS", "clip_sizes", "contrastive_loss", "eos_positions",
           "make_text_block", "normalise", "zero_shot_logits"]
