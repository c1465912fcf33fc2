"""Deprecated: import from jaxformer.models.clip; kept for one release."""

from jaxformer.models.clip.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

__all__ = ["CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig"]
