"""The Vision Transformer family, registered on import:

    config.py   ViTConfig
    model.py    ViT and its block
    family.py   the registry entry and the sizes table of `jaxformer info`
"""

from jaxformer.models.vit.config import ViTConfig
from jaxformer.models.vit.family import VIT, vit_sizes
from jaxformer.models.vit.model import ViT, make_block

__all__ = ["VIT", "ViT", "ViTConfig", "make_block", "vit_sizes"]
