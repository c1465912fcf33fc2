"""The CLIP family's HF converter: CLIPModel (both towers, both projections, the logit scale).

config.json's `text_config` and `vision_config` become `CLIPConfig.text` / `.vision`. The text
tower's `hidden_act` and `layer_norm_eps` become `CLIPConfig.activation` / `norm_eps`, and the
vision tower's are set on `CLIPConfig.vision` only where they differ (every published CLIP has one
of each). The text tower's `eos_token_id` is kept, since it decides where texts are pooled (see
`CLIPTextConfig`).

Weights: the vision patch embedding is a bias-free stride-p Conv2d (our [p, p, channels, embed]
kernel), the class embedding a [embed] vector, positions an [1 + patches, embed] table; the
projections are bias-free nn.Linear; `logit_scale` is a scalar.
"""

import math
from typing import Any

from jaxformer.interop.conventions import choose, export_names, layer_norm, linear
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, reshaped
from jaxformer.interop.vit import ACTIVATIONS, block_tensors, conv_patch
from jaxformer.models.clip import TOWERS, CLIPConfig, CLIPTextConfig, CLIPVisionConfig

CLIP_MODEL = "CLIPModel"
CLIP_BLOCK = {"norm1": "layer_norm1", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
              "v": "self_attn.v_proj", "o": "self_attn.out_proj", "norm2": "layer_norm2",
              "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def config_from_hf(arch: str, hf: dict[str, Any]) -> CLIPConfig:
    text, vision = hf.get("text_config") or {}, hf.get("vision_config") or {}
    activation = choose("text_config.hidden_act", text.get("hidden_act", "quick_gelu"), ACTIVATIONS)
    vision_activation = choose("vision_config.hidden_act", vision.get("hidden_act", "quick_gelu"),
                               ACTIVATIONS)
    eps, vision_eps = text.get("layer_norm_eps", 1e-5), vision.get("layer_norm_eps", 1e-5)
    return CLIPConfig(
        text=CLIPTextConfig(
            vocab_size=text.get("vocab_size", 49408), d_model=text.get("hidden_size", 512),
            num_layers=text.get("num_hidden_layers", 12),
            num_heads=text.get("num_attention_heads", 8),
            mlp_dim=text.get("intermediate_size", 2048),
            max_seq_len=text.get("max_position_embeddings", 77),
            eos_token_id=text.get("eos_token_id", 2)),
        vision=CLIPVisionConfig(
            image_size=vision.get("image_size", 224), patch_size=vision.get("patch_size", 32),
            num_channels=vision.get("num_channels", 3), d_model=vision.get("hidden_size", 768),
            num_layers=vision.get("num_hidden_layers", 12),
            num_heads=vision.get("num_attention_heads", 12),
            mlp_dim=vision.get("intermediate_size", 3072),
            activation=None if vision_activation == activation else vision_activation,
            norm_eps=None if vision_eps == eps else vision_eps),
        projection_dim=hf.get("projection_dim", 512),
        logit_scale_init=hf.get("logit_scale_init_value", math.log(1 / 0.07)),
        activation=activation, norm_eps=eps)


def export_architecture(c: CLIPConfig) -> str:
    if c.scan_layers:
        raise UnsupportedConfigError("export the per-layer layout (scan_layers=False)")
    for tower in TOWERS:
        if c.tower_activation(tower) not in ACTIVATIONS.values():
            raise UnsupportedConfigError(f"CLIPModel has no activation "
                                         f"{c.tower_activation(tower)!r} ({tower} tower)")
    return CLIP_MODEL


def config_to_hf(arch: str, c: CLIPConfig) -> dict[str, Any]:
    t, v = c.text, c.vision
    act = {tower: export_names(ACTIVATIONS)[c.tower_activation(tower)] for tower in TOWERS}
    return {
        "architectures": [CLIP_MODEL], "model_type": "clip", "projection_dim": c.projection_dim,
        "logit_scale_init_value": c.logit_scale_init, "torch_dtype": c.param_dtype,
        "text_config": {"vocab_size": t.vocab_size, "hidden_size": t.d_model,
                        "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
                        "intermediate_size": t.mlp_dim, "max_position_embeddings": t.max_seq_len,
                        "eos_token_id": t.eos_token_id, "hidden_act": act["text"],
                        "layer_norm_eps": c.tower_norm_eps("text"),
                        "model_type": "clip_text_model"},
        "vision_config": {"image_size": v.image_size, "patch_size": v.patch_size,
                          "num_channels": v.num_channels, "hidden_size": v.d_model,
                          "num_hidden_layers": v.num_layers, "num_attention_heads": v.num_heads,
                          "intermediate_size": v.mlp_dim, "hidden_act": act["vision"],
                          "layer_norm_eps": c.tower_norm_eps("vision"),
                          "model_type": "clip_vision_model"},
    }


def tensors(arch: str, c: CLIPConfig) -> list[Tensor]:
    t, v, P = c.text, c.vision, c.projection_dim
    n = (v.image_size // v.patch_size) ** 2 + 1
    rows = [
        reshaped("logit_scale", (), ("logit_scale",), ()),
        reshaped("text_model.embeddings.token_embedding.weight", (t.vocab_size, t.d_model),
                 ("text", "embed", "embedding"), (t.vocab_size, t.d_model)),
        reshaped("text_model.embeddings.position_embedding.weight", (t.max_seq_len, t.d_model),
                 ("text", "position_embedding", "embedding"), (t.max_seq_len, t.d_model)),
        *layer_norm("text_model.final_layer_norm", ("text", "final_norm"), t.d_model),
        reshaped("vision_model.embeddings.class_embedding", (v.d_model,), ("vision", "cls_token"),
                 (v.d_model,)),
        conv_patch("vision_model.embeddings.patch_embedding.weight", v.d_model, v.num_channels,
                   v.patch_size, ("vision", "patch_embedding", "projection", "kernel")),
        reshaped("vision_model.embeddings.position_embedding.weight", (n, v.d_model),
                 ("vision", "position_embedding"), (n, v.d_model)),
        *layer_norm("vision_model.pre_layrnorm", ("vision", "pre_norm"), v.d_model),
        *layer_norm("vision_model.post_layernorm", ("vision", "final_norm"), v.d_model),
        *linear("text_projection", ("text_projection",), (t.d_model,), (P,), bias=False),
        *linear("visual_projection", ("visual_projection",), (v.d_model,), (P,), bias=False),
    ]
    for i in range(t.num_layers):
        rows += block_tensors(f"text_model.encoder.layers.{i}.", ("text", "layers", i), t.d_model,
                              t.num_heads, t.mlp_dim, CLIP_BLOCK)
    for i in range(v.num_layers):
        rows += block_tensors(f"vision_model.encoder.layers.{i}.", ("vision", "layers", i),
                              v.d_model, v.num_heads, v.mlp_dim, CLIP_BLOCK)
    return rows


# Older checkpoints saved the position ids as buffers.
IGNORED_SUFFIXES = ("embeddings.position_ids",)

CONVERTER = register_converter(Converter(
    family="clip", architectures=(CLIP_MODEL,), model_types={"clip": CLIP_MODEL},
    config_from_hf=config_from_hf, export_architecture=export_architecture,
    config_to_hf=config_to_hf, tensors=tensors, base_prefix={},
    ignored_suffixes=IGNORED_SUFFIXES))
