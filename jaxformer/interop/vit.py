"""The ViT family's HF converter: ViTModel (features + pooler) and ViTForImageClassification.

config.json <-> `ViTConfig`. A ViTModel checkpoint carries HF's pooler (dense + tanh on [CLS]) and
no head; a ViTForImageClassification checkpoint carries a head of `len(id2label)` labels and no
pooler. Names are those `save_pretrained` writes (`encoder.layer.N.attention.attention.query`, ...).

Weights: the patch projection is a Conv2d [embed, channels, p, p] with stride p, which is the
linear map of each flattened patch: ours is its kernel as [p, p, channels, embed]. Linear layers
are nn.Linear, [out, in].
"""

from typing import Any

import numpy as np

from jaxformer.interop.conventions import activations, choose, export_names, layer_norm, linear
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, reshaped
from jaxformer.models.vit import ViTConfig

VIT_MODEL = "ViTModel"
VIT_CLASSIFIER = "ViTForImageClassification"
SUPPORTED = (VIT_MODEL, VIT_CLASSIFIER)
MODEL_TYPES = {"vit": VIT_MODEL}
# HF hidden_act -> jaxformer activation (CLIP's towers read the same names).
ACTIVATIONS = activations("gelu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu")
POOLER_ACTIVATIONS = {"tanh": "tanh", "linear": "none"}


def config_from_hf(arch: str, hf: dict[str, Any]) -> ViTConfig:
    """A `ViTConfig` equal in function to an HF ViT config.json (defaults are ViTConfig's)."""
    if not hf.get("qkv_bias", True):
        raise UnsupportedConfigError("config.json qkv_bias=false is not supported: jaxformer's ViT "
                                     "has biases on every attention projection")
    d_model = hf.get("hidden_size", 768)
    if hf.get("pooler_output_size") not in (None, d_model):
        raise UnsupportedConfigError(f"config.json pooler_output_size={hf['pooler_output_size']} "
                                     f"is not supported: jaxformer's pooler keeps hidden_size")
    image_size, patch_size = hf.get("image_size", 224), hf.get("patch_size", 16)
    for key, value in (("image_size", image_size), ("patch_size", patch_size)):
        if not isinstance(value, int):
            raise UnsupportedConfigError(f"config.json {key}={value!r} is not supported: jaxformer's "
                                         f"ViT takes one integer (square images and patches)")
    classifier = arch == VIT_CLASSIFIER
    return ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=hf.get("num_channels", 3),
        d_model=d_model, num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12), mlp_dim=hf.get("intermediate_size", 3072),
        num_labels=len(hf.get("id2label") or {0: 0, 1: 1}) if classifier else 0,
        pooler=not classifier,
        pooler_act=choose("pooler_act", hf.get("pooler_act", "tanh"), POOLER_ACTIVATIONS),
        activation=choose("hidden_act", hf.get("hidden_act", "gelu"), ACTIVATIONS),
        norm_eps=hf.get("layer_norm_eps", 1e-12))


def export_architecture(c: ViTConfig) -> str:
    problems = [name for name, bad in (("pre_norm=True", c.pre_norm), ("patch_bias=False", not c.patch_bias),
                                       ("scan_layers=True", c.scan_layers)) if bad]
    if c.num_labels and c.pooler:
        problems.append("both a classifier and a pooler")
    if not c.num_labels and not c.pooler:
        problems.append("neither a classifier nor a pooler")
    if c.activation not in ACTIVATIONS.values():
        problems.append(f"activation={c.activation}")
    if problems:
        raise UnsupportedConfigError(
            f"no HuggingFace ViT class matches this config ({', '.join(problems)}): ViTModel has a "
            f"pooler and no head, ViTForImageClassification a head and no pooler")
    return VIT_CLASSIFIER if c.num_labels else VIT_MODEL


def config_to_hf(arch: str, c: ViTConfig) -> dict[str, Any]:
    hf = {"architectures": [arch], "model_type": "vit", "hidden_size": c.d_model,
          "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
          "intermediate_size": c.mlp_dim, "hidden_act": export_names(ACTIVATIONS)[c.activation],
          "layer_norm_eps": c.norm_eps, "image_size": c.image_size, "patch_size": c.patch_size,
          "num_channels": c.num_channels, "qkv_bias": True, "pooler_output_size": c.d_model,
          "pooler_act": export_names(POOLER_ACTIVATIONS)[c.pooler_act], "torch_dtype": c.param_dtype}
    if arch == VIT_CLASSIFIER:
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(c.num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(c.num_labels)}
    return hf


# --- weight tables ---


def conv_patch(name: str, d_model: int, channels: int, patch: int, path) -> Tensor:
    """A stride-p Conv2d kernel [embed, channels, p, p] <-> our patch kernel [p, p, channels, embed]."""
    return Tensor(name, (d_model, channels, patch, patch), (path,),
                  lambda w: (np.transpose(w, (2, 3, 1, 0)),), lambda p: np.transpose(p, (3, 2, 0, 1)))


def block_tensors(hf: str, ours: tuple, D: int, H: int, I: int, names: dict[str, str]) -> list[Tensor]:
    """One pre-LN encoder block. `names` gives the HF module names of: norm1, q, k, v, o, norm2,
    fc1, fc2 (ViT and CLIP name them differently)."""
    hd = D // H
    attn, ffn = ours + ("attention",), ours + ("feed_forward",)
    return [
        *layer_norm(hf + names["norm1"], ours + ("attention_norm",), D),
        *linear(hf + names["q"], attn + ("query",), (D,), (H, hd)),
        *linear(hf + names["k"], attn + ("key",), (D,), (H, hd)),
        *linear(hf + names["v"], attn + ("value",), (D,), (H, hd)),
        *linear(hf + names["o"], attn + ("out",), (H, hd), (D,)),
        *layer_norm(hf + names["norm2"], ours + ("feed_forward_norm",), D),
        *linear(hf + names["fc1"], ffn + ("up",), (D,), (I,)),
        *linear(hf + names["fc2"], ffn + ("down",), (I,), (D,)),
    ]


VIT_BLOCK = {"norm1": "layernorm_before", "q": "attention.attention.query",
             "k": "attention.attention.key", "v": "attention.attention.value",
             "o": "attention.output.dense", "norm2": "layernorm_after",
             "fc1": "intermediate.dense", "fc2": "output.dense"}


def tensors(arch: str, c: ViTConfig) -> list[Tensor]:
    D, N = c.d_model, c.num_patches
    base = "vit." if arch == VIT_CLASSIFIER else ""
    rows = [
        reshaped(base + "embeddings.cls_token", (1, 1, D), ("cls_token",), (D,)),
        reshaped(base + "embeddings.position_embeddings", (1, N + 1, D), ("position_embedding",),
                 (N + 1, D)),
        conv_patch(base + "embeddings.patch_embeddings.projection.weight", D, c.num_channels,
                   c.patch_size, ("patch_embedding", "projection", "kernel")),
        reshaped(base + "embeddings.patch_embeddings.projection.bias", (D,),
                 ("patch_embedding", "projection", "bias"), (D,)),
        *layer_norm(base + "layernorm", ("final_norm",), D),
    ]
    for i in range(c.num_layers):
        rows += block_tensors(f"{base}encoder.layer.{i}.", ("layers", i), D, c.num_heads,
                              c.mlp_dim, VIT_BLOCK)
    if c.pooler:
        rows += linear(base + "pooler.dense", ("pooler",), (D,), (D,))
    if c.num_labels:
        rows += linear("classifier", ("classifier",), (D,), (c.num_labels,))
    return rows


CONVERTER = register_converter(Converter(
    family="vit", architectures=SUPPORTED, model_types=MODEL_TYPES, config_from_hf=config_from_hf,
    export_architecture=export_architecture, config_to_hf=config_to_hf, tensors=tensors,
    base_prefix={}))
