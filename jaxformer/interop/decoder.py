"""The decoder family's HF converter: GPT2LMHeadModel and LlamaForCausalLM.

config.json <-> `DecoderConfig`: only settings that change the forward pass are mapped; anything
the decoder cannot reproduce exactly (biases on attention but not the MLP, an unsupported RoPE
variant, ...) is refused rather than silently approximated. Dropout rates are not carried over: an
imported model starts with `dropout=0.0`; set it with `config.replace(dropout=...)` before
fine-tuning.

Weights: HF GPT-2 uses Conv1D, already [in, out], with q|k|v concatenated on the last axis of
`c_attn`. HF Llama uses nn.Linear, [out, in]. Llama's RoPE rotates halves exactly as
`jaxformer.nn.apply_rope` does, so q/k need no permutation.
"""

from typing import Any

from jaxformer.interop.conventions import (activations, choose, export_names, gated, layer_norm,
                                           linear, require, rms_norm)
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, fused_qkv, reshaped, vocab_table
from jaxformer.models.decoder import DecoderConfig
from jaxformer.nn.positions import RopeScaling

GPT2 = "GPT2LMHeadModel"
LLAMA = "LlamaForCausalLM"
SUPPORTED = (GPT2, LLAMA)
MODEL_TYPES = {"gpt2": GPT2, "llama": LLAMA}

# HF activation names -> jaxformer's. GPT-2 applies one to the MLP's hidden layer; Llama applies it
# to the gate branch of a gated MLP, so "silu" there means SwiGLU.
GPT2_ACTIVATIONS = activations("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
LLAMA_ACTIVATIONS = gated(activations("gelu", "relu", "silu", "swish"))


def config_from_hf(arch: str, hf_config: dict[str, Any]) -> DecoderConfig:
    """A `DecoderConfig` equal in function to an HF `config.json` dict (GPT-2 or Llama)."""
    return gpt2_config(hf_config) if arch == GPT2 else _llama_config(hf_config)


def gpt2_config(hf: dict) -> DecoderConfig:
    """A `DecoderConfig` equal in function to a GPT-2 config.json dict (also the decoder of a
    VisionEncoderDecoderModel)."""
    # Defaults are GPT2Config's, for hand-written config.json files that leave keys out.
    require(hf, "scale_attn_weights", True, True, "decoder")
    require(hf, "scale_attn_by_inverse_layer_idx", False, False, "decoder")
    require(hf, "add_cross_attention", False, False, "decoder")
    d_model = hf.get("n_embd", 768)
    return DecoderConfig(
        vocab_size=hf.get("vocab_size", 50257),
        d_model=d_model,
        num_layers=hf.get("n_layer", 12),
        num_heads=hf.get("n_head", 12),
        mlp_dim=hf.get("n_inner") or 4 * d_model,
        max_seq_len=hf.get("n_positions", 1024),
        position="learned",
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        activation=choose("activation_function", hf.get("activation_function", "gelu_new"),
                          GPT2_ACTIVATIONS),
        use_bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True),
    )


def _llama_rope(hf: dict) -> tuple[float, RopeScaling | None]:
    # transformers 5 writes `rope_parameters` (theta inside); 4.x writes `rope_theta` and
    # `rope_scaling` (with "type" in early 4.x releases).
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type == "llama3":
        return theta, RopeScaling(
            factor=float(params["factor"]), low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position=int(params["original_max_position_embeddings"]))
    raise UnsupportedConfigError(f"config.json rope_type={rope_type!r} is not supported: "
                                 f"jaxformer implements 'default' and 'llama3' RoPE")


def _llama_config(hf: dict) -> DecoderConfig:
    attention_bias, mlp_bias = hf.get("attention_bias", False), hf.get("mlp_bias", False)
    if attention_bias != mlp_bias:
        raise UnsupportedConfigError(
            f"config.json attention_bias={attention_bias} with mlp_bias={mlp_bias} is not "
            f"supported: DecoderConfig.use_bias switches attention and MLP biases together")
    d_model, num_heads = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    rope_theta, rope_scaling = _llama_rope(hf)
    return DecoderConfig(
        vocab_size=hf.get("vocab_size", 32000),
        d_model=d_model,
        num_layers=hf.get("num_hidden_layers", 32),
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or d_model // num_heads,
        mlp_dim=hf.get("intermediate_size", 11008),
        max_seq_len=hf.get("max_position_embeddings", 2048),
        position="rope",
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        activation=choose("hidden_act", hf.get("hidden_act", "silu"), LLAMA_ACTIVATIONS),
        use_bias=bool(attention_bias),
        tie_embeddings=hf.get("tie_word_embeddings", False),
    )


def export_architecture(config: DecoderConfig) -> str:
    """Which HF class reproduces `config` exactly; UnsupportedConfigError says why none does."""
    c = config
    common = []
    if c.norm_position != "pre":
        common.append("norm_position='post'")
    if c.sliding_window is not None:
        common.append(f"sliding_window={c.sliding_window}")
    if c.scan_layers:
        common.append("scan_layers=True (export the per-layer layout)")
    if c.sparse_pattern is not None:
        common.append(f"sparse_pattern={c.sparse_pattern}")
    if c.head != "lm":
        common.append(f"head={c.head!r} (HF's causal-LM classes carry a language-model head)")
    if c.moe_num_experts:
        common.append(f"moe_num_experts={c.moe_num_experts} (MixtralForCausalLM exports experts)")
    gpt2 = (c.position == "learned" and c.norm == "layernorm" and c.use_bias
            and c.activation in export_names(GPT2_ACTIVATIONS) and c.kv_heads == c.num_heads
            and c.head_size * c.num_heads == c.d_model)
    llama = (c.position == "rope" and c.norm == "rmsnorm"
             and c.activation in export_names(LLAMA_ACTIVATIONS))
    if common or not (gpt2 or llama):
        raise UnsupportedConfigError(
            "no HuggingFace architecture matches this config"
            + (f" ({', '.join(common)})" if common else "")
            + ": GPT2LMHeadModel needs learned positions, LayerNorm with biases, MHA and a plain "
              "activation; LlamaForCausalLM needs RoPE, RMSNorm and a gated activation")
    return GPT2 if gpt2 else LLAMA


def config_to_hf(arch: str, config: DecoderConfig) -> dict[str, Any]:
    """An HF `config.json` dict for `config` (the inverse of `config_from_hf`)."""
    c = config
    # HF's GPT-2 default token ids (50256) are outside a smaller vocabulary, where HF warns.
    special = 50256 if c.vocab_size > 50256 else None
    if arch == GPT2:
        return {
            "architectures": [GPT2], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_embd": c.d_model, "n_layer": c.num_layers, "n_head": c.num_heads,
            "n_inner": c.ffn_dim, "n_positions": c.max_seq_len, "layer_norm_epsilon": c.norm_eps,
            "activation_function": export_names(GPT2_ACTIVATIONS)[c.activation],
            "tie_word_embeddings": c.tie_embeddings, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "bos_token_id": special,
            "eos_token_id": special, "torch_dtype": c.param_dtype,
        }
    rope_scaling = None
    if c.rope_scaling is not None:
        s = c.rope_scaling
        rope_scaling = {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                        "high_freq_factor": s.high_freq_factor,
                        "original_max_position_embeddings": s.original_max_position}
    # `rope_theta` + `rope_scaling` is the 4.x layout; transformers 5 still reads it.
    return {
        "architectures": [LLAMA], "model_type": "llama", "vocab_size": c.vocab_size,
        "hidden_size": c.d_model, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_size, "intermediate_size": c.ffn_dim,
        "max_position_embeddings": c.max_seq_len, "rope_theta": c.rope_theta,
        "rope_scaling": rope_scaling, "rms_norm_eps": c.norm_eps,
        "hidden_act": export_names(LLAMA_ACTIVATIONS)[c.activation], "attention_bias": c.use_bias,
        "mlp_bias": c.use_bias, "tie_word_embeddings": c.tie_embeddings,
        "torch_dtype": c.param_dtype,
    }


# --- weight tables ---


def gpt2_tensors(c: DecoderConfig) -> list[Tensor]:
    D, V, P, I, H, hd = c.d_model, c.vocab_size, c.max_seq_len, c.ffn_dim, c.num_heads, c.head_size
    rows = [
        vocab_table("transformer.wte.weight", V, D, ("embed", "embedding"), c.padded_vocab_size),
        reshaped("transformer.wpe.weight", (P, D), ("position_embedding", "embedding"), (P, D)),
        *layer_norm("transformer.ln_f", ("final_norm",), D),
    ]
    for i in range(c.num_layers):
        hf, ours = f"transformer.h.{i}.", ("layers", i)
        attn, ffn = ours + ("attention",), ours + ("feed_forward",)
        rows += [
            *layer_norm(hf + "ln_1", ours + ("attention_norm",), D),
            fused_qkv(hf + "attn.c_attn.weight", (D, 3 * D), attn, "kernel", H, hd),
            fused_qkv(hf + "attn.c_attn.bias", (3 * D,), attn, "bias", H, hd),
            reshaped(hf + "attn.c_proj.weight", (D, D), attn + ("out", "kernel"), (H, hd, D)),
            reshaped(hf + "attn.c_proj.bias", (D,), attn + ("out", "bias"), (D,)),
            *layer_norm(hf + "ln_2", ours + ("feed_forward_norm",), D),
            reshaped(hf + "mlp.c_fc.weight", (D, I), ffn + ("up", "kernel"), (D, I)),
            reshaped(hf + "mlp.c_fc.bias", (I,), ffn + ("up", "bias"), (I,)),
            reshaped(hf + "mlp.c_proj.weight", (I, D), ffn + ("down", "kernel"), (I, D)),
            reshaped(hf + "mlp.c_proj.bias", (D,), ffn + ("down", "bias"), (D,)),
        ]
    if not c.tie_embeddings:
        rows.append(vocab_table("lm_head.weight", V, D, ("lm_head", "kernel"), c.padded_vocab_size,
                                transpose=True))
    return rows


def llama_tensors(c: DecoderConfig) -> list[Tensor]:
    D, V, I = c.d_model, c.vocab_size, c.ffn_dim
    H, KV, hd = c.num_heads, c.kv_heads, c.head_size
    rows = [
        vocab_table("model.embed_tokens.weight", V, D, ("embed", "embedding"), c.padded_vocab_size),
        *rms_norm("model.norm", ("final_norm",), D),
    ]
    for i in range(c.num_layers):
        hf, ours = f"model.layers.{i}.", ("layers", i)
        attn, ffn = ours + ("attention",), ours + ("feed_forward",)
        # (HF projection, jaxformer module, our kernel's input and output axes)
        projections = [
            ("self_attn.q_proj", attn + ("query",), (D,), (H, hd)),
            ("self_attn.k_proj", attn + ("key",), (D,), (KV, hd)),
            ("self_attn.v_proj", attn + ("value",), (D,), (KV, hd)),
            ("self_attn.o_proj", attn + ("out",), (H, hd), (D,)),
            ("mlp.gate_proj", ffn + ("gate",), (D,), (I,)),  # the activated branch
            ("mlp.up_proj", ffn + ("up",), (D,), (I,)),
            ("mlp.down_proj", ffn + ("down",), (I,), (D,)),
        ]
        rows += [*rms_norm(hf + "input_layernorm", ours + ("attention_norm",), D),
                 *rms_norm(hf + "post_attention_layernorm", ours + ("feed_forward_norm",), D)]
        for name, path, in_shape, out_shape in projections:
            # attention_bias = mlp_bias = use_bias
            rows += linear(hf + name, path, in_shape, out_shape, bias=c.use_bias)
    if not c.tie_embeddings:
        rows.append(vocab_table("lm_head.weight", V, D, ("lm_head", "kernel"), c.padded_vocab_size,
                                transpose=True))
    return rows


# Non-parameter buffers that some HF versions saved next to the weights: the causal-mask buffers of
# old GPT-2 checkpoints and Llama's precomputed RoPE frequencies. Safe to skip.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def tensors(arch: str, config: DecoderConfig) -> list[Tensor]:
    return gpt2_tensors(config) if arch == GPT2 else llama_tensors(config)


CONVERTER = register_converter(Converter(
    family="decoder", architectures=SUPPORTED, model_types=MODEL_TYPES,
    config_from_hf=config_from_hf, export_architecture=export_architecture,
    config_to_hf=config_to_hf, tensors=tensors,
    # Older checkpoints were saved from the bare GPT2Model / LlamaModel, without these prefixes.
    base_prefix={GPT2: "transformer.", LLAMA: "model."}, ignored_suffixes=IGNORED_SUFFIXES))
