"""MixtralForCausalLM <-> a decoder with experts (`DecoderConfig.moe_num_experts`).

Mixtral (Jiang et al. 2024) is Llama's decoder with every MLP replaced by `num_local_experts`
SwiGLU experts, `num_experts_per_tok` of them per token, weighted by a softmax over the chosen
router logits (HF: top-k of the softmax, renormalised): jaxformer's `moe_router=topk_softmax`
with dropless dispatch, so no token is dropped, as in HF.

Checkpoints (as on the Hub, and as transformers 5 still saves them) hold one tensor per expert:
`model.layers.{i}.block_sparse_moe.experts.{j}.w1|w2|w3.weight` (gate, down, up; [out, in]) and the
router `block_sparse_moe.gate.weight` [experts, hidden]. Each fills entry j of our stacked
`[expert, ...]` parameters.

Training settings: `router_aux_loss_coef` becomes `moe_aux_loss_coef` (HF averages the
load-balancing loss over layers, jaxformer sums the per-layer losses); Mixtral has no router
z-loss (`moe_z_loss_coef=0`); `router_jitter_noise` (training only) is not implemented and not
carried over.
"""

from typing import Any

from jaxformer.interop.conventions import linear
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.decoder import LLAMA, _llama_config, config_to_hf as llama_config_to_hf
from jaxformer.interop.decoder import llama_tensors
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, expert_slice
from jaxformer.models.decoder import DecoderConfig

MIXTRAL = "MixtralForCausalLM"


def config_from_hf(arch: str, hf: dict[str, Any]) -> DecoderConfig:
    """A `DecoderConfig` with experts equal in function to a Mixtral `config.json` dict."""
    base = _llama_config({**hf, "attention_bias": False, "mlp_bias": False})
    return base.replace(
        sliding_window=hf.get("sliding_window"),
        moe_num_experts=hf.get("num_local_experts", 8),
        moe_top_k=hf.get("num_experts_per_tok", 2),
        moe_router="topk_softmax",
        moe_dispatch="dropless",
        moe_aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.001)),
        moe_z_loss_coef=0.0,
    )


def export_architecture(config: DecoderConfig) -> str:
    c = config
    problems = []
    if not c.moe_num_experts:
        problems.append("no experts (moe_num_experts=0)")
    if c.position != "rope" or c.norm != "rmsnorm" or c.activation != "swiglu" or c.use_bias:
        problems.append("Mixtral needs RoPE, RMSNorm, SwiGLU experts and no biases")
    if c.moe_router != "topk_softmax" or c.moe_dispatch != "dropless":
        problems.append("Mixtral routes with topk_softmax and drops no token (moe_dispatch=dropless)")
    if c.sparse_pattern is not None or c.norm_position != "pre" or c.scan_layers:
        problems.append("no sparse pattern, pre-norm, per-layer layout")
    if c.tie_embeddings:
        problems.append("Mixtral has an untied LM head")
    if c.head != "lm":
        problems.append(f"head={c.head!r}: MixtralForCausalLM carries a language-model head")
    if problems:
        raise UnsupportedConfigError(f"MixtralForCausalLM cannot reproduce this config: {'; '.join(problems)}")
    return MIXTRAL


def config_to_hf(arch: str, config: DecoderConfig) -> dict[str, Any]:
    c = config
    hf = llama_config_to_hf(LLAMA, c.replace(moe_num_experts=0))
    for key in ("attention_bias", "mlp_bias", "rope_scaling"):
        hf.pop(key, None)
    return {**hf, "architectures": [MIXTRAL], "model_type": "mixtral",
            "intermediate_size": c.expert_dim, "num_local_experts": c.moe_num_experts,
            "num_experts_per_tok": c.moe_top_k, "router_aux_loss_coef": c.moe_aux_loss_coef,
            "sliding_window": c.sliding_window, "output_router_logits": False,
            "router_jitter_noise": 0.0}


def tensors(arch: str, config: DecoderConfig) -> list[Tensor]:
    c = config
    D, I, E = c.d_model, c.expert_dim, c.moe_num_experts
    # Llama's rows for everything but the MLP (a dense Llama of the same sizes has the same names).
    rows = [row for row in llama_tensors(c.replace(moe_num_experts=0, mlp_dim=I))
            if ".mlp." not in row.name]
    for i in range(c.num_layers):
        hf, ours = f"model.layers.{i}.block_sparse_moe.", ("layers", i, "feed_forward")
        rows += linear(hf + "gate", ours + ("router",), (D,), (E,), bias=False)
        for j in range(E):
            expert = f"{hf}experts.{j}."
            rows += [
                expert_slice(expert + "w1.weight", (I, D), ours + ("gate",), (D, I), j, E, transpose=True),
                expert_slice(expert + "w3.weight", (I, D), ours + ("up",), (D, I), j, E, transpose=True),
                expert_slice(expert + "w2.weight", (D, I), ours + ("down",), (I, D), j, E, transpose=True),
            ]
    return rows


CONVERTER = register_converter(Converter(
    family="decoder", architectures=(MIXTRAL,), model_types={"mixtral": MIXTRAL},
    config_from_hf=config_from_hf, export_architecture=export_architecture,
    config_to_hf=config_to_hf, tensors=tensors, base_prefix={MIXTRAL: "model."},
    ignored_suffixes=("rotary_emb.inv_freq",)))
