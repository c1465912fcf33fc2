"""T5ForConditionalGeneration (T5 v1.0 and v1.1) <-> the encoder-decoder family: import and export.

config.json: d_kv is the head dim (t5-small has 8 heads of 64 = d_model, t5-v1_1-small 6 of
64 != 512); feed_forward_proj "relu" (v1.0) or "gated-gelu" (v1.1, tanh GELU). The relative
position table is stored in the first block of each stack
(`encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight`); jaxformer keeps it on the
stack (`encoder/relative_bias`), shared by all its layers exactly as T5 shares it.

The output layer: v1.0 ties it to `shared` and scales the decoder's output by d_model^-0.5 first;
v1.1 checkpoints ship their own `lm_head.weight` and do not scale. transformers 4.x records both
as `tie_word_embeddings`; transformers 5 always writes `tie_word_embeddings: true` and records the
scaling as `scale_decoder_outputs`, so an untied head is recognised by its tensor: present and
different from `shared.weight`.

Weights are nn.Linear [out, in]: q/k/v [heads * d_kv, d_model] -> [d_model, heads, d_kv].
"""

from typing import Any

import numpy as np

from jaxformer.interop.conventions import activations, choose, export_names, gated, linear, rms_norm
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, reshaped, vocab_table
from jaxformer.models.encoder_decoder import EncoderDecoderConfig

T5 = "T5ForConditionalGeneration"
# feed_forward_proj -> jaxformer activation: an activation's name, or "gated-" and the name of the
# one on the gate branch (T5 v1.1). HF reads "gated-gelu" as gelu_new, the tanh GELU.
ACTIVATIONS = {**activations("gelu", "gelu_new", "relu", "silu"),
               **{f"gated-{name}": act for name, act in gated(activations("relu", "silu")).items()},
               "gated-gelu": "geglu_tanh"}
ATTENTION = {"SelfAttention": "attention", "EncDecAttention": "cross_attention"}


def config_from_hf(arch: str, hf: dict[str, Any]) -> EncoderDecoderConfig:
    activation = choose("feed_forward_proj", hf.get("feed_forward_proj", "relu"), ACTIVATIONS)
    tied = hf.get("tie_word_embeddings", True)
    num_layers = hf.get("num_layers", 6)
    return EncoderDecoderConfig(
        vocab_size=hf.get("vocab_size", 32128), d_model=hf.get("d_model", 512),
        encoder_layers=num_layers, decoder_layers=hf.get("num_decoder_layers") or num_layers,
        num_heads=hf.get("num_heads", 8), head_dim=hf.get("d_kv", 64), mlp_dim=hf.get("d_ff", 2048),
        max_seq_len=hf.get("n_positions", 512), position="relative",
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        norm="rmsnorm", norm_eps=hf.get("layer_norm_epsilon", 1e-6), norm_position="pre",
        activation=activation, use_bias=False, attention_scale=False,
        tie_embeddings=tied, scale_decoder_output=hf.get("scale_decoder_outputs", tied),
        decoder_start_token_id=_start_token(hf), init="t5")


def _start_token(hf: dict) -> int:
    start = hf.get("decoder_start_token_id")
    if start is None:
        start = hf.get("pad_token_id", 0)
    return 0 if start is None else int(start)


def config_from_checkpoint(arch: str, config: EncoderDecoderConfig, ckpt) -> EncoderDecoderConfig:
    """An `lm_head.weight` that differs from `shared.weight` is an untied head (see above)."""
    if config.tie_embeddings and "lm_head.weight" in ckpt.names():
        if not np.array_equal(ckpt.get("lm_head.weight"), ckpt.get("shared.weight")):
            return config.replace(tie_embeddings=False)
    return config


def export_architecture(config: EncoderDecoderConfig) -> str:
    c = config
    problems = [text for bad, text in [
        (c.position != "relative", f"position={c.position!r} (T5 uses relative buckets)"),
        (c.norm != "rmsnorm" or c.norm_position != "pre", "T5 needs pre-norm RMSNorm"),
        (c.use_bias, "use_bias=True (T5 has no biases)"),
        (c.attention_scale, "attention_scale=True (T5 does not scale scores)"),
        (c.embedding_norm or c.scale_embedding or c.final_logits_bias,
         "embedding_norm / scale_embedding / final_logits_bias are not T5's"),
        (c.activation not in ACTIVATIONS.values(), f"activation={c.activation!r}"),
        (c.scan_layers, "scan_layers=True (export the per-layer layout)"),
        (c.per_stack, "the encoder and the decoder differ in heads or mlp_dim (T5's config.json "
                      "has one num_heads and one d_ff)"),
    ] if bad]
    if problems:
        raise UnsupportedConfigError("not T5: " + "; ".join(problems))
    return T5


def config_to_hf(arch: str, config: EncoderDecoderConfig) -> dict[str, Any]:
    c = config
    proj = export_names(ACTIVATIONS)[c.activation]
    return {
        "architectures": [T5], "model_type": "t5", "is_encoder_decoder": True,
        "vocab_size": c.vocab_size, "d_model": c.d_model, "d_kv": c.head_size, "d_ff": c.mlp_dim,
        "num_layers": c.encoder_layers, "num_decoder_layers": c.decoder_layers,
        "num_heads": c.num_heads, "relative_attention_num_buckets": c.relative_buckets,
        "relative_attention_max_distance": c.relative_max_distance,
        "layer_norm_epsilon": c.norm_eps, "feed_forward_proj": proj, "n_positions": c.max_seq_len,
        # 4.x reads the head's tying (and the scaling with it) from tie_word_embeddings; 5.x reads
        # the scaling from scale_decoder_outputs and the untied head from its tensor.
        "tie_word_embeddings": c.tie_embeddings, "scale_decoder_outputs": c.scale_decoder_output,
        "decoder_start_token_id": c.decoder_start_token_id, "pad_token_id": 0, "eos_token_id": 1,
        "dropout_rate": c.dropout, "torch_dtype": c.param_dtype,
    }


def tensors(arch: str, config: EncoderDecoderConfig) -> list[Tensor]:
    c = config
    D, V = c.d_model, c.vocab_size
    rows = [vocab_table("shared.weight", V, D, ("embed", "embedding"), c.padded_vocab_size)]
    gated_ffn = c.activation in ("geglu_tanh", "geglu", "reglu", "swiglu")
    for stack, layers in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        F, H, hd = c.stack_mlp_dim(stack), c.stack_heads(stack), c.stack_head_size(stack)
        rows += [
            reshaped(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                     (c.relative_buckets, H), (stack, "relative_bias", "embedding"),
                     (c.relative_buckets, H)),
            *rms_norm(f"{stack}.final_layer_norm", (stack, "final_norm"), D),
        ]
        for i in range(layers):
            hf, ours = f"{stack}.block.{i}.layer.", (stack, "layers", i)
            sublayers = ["SelfAttention"] + (["EncDecAttention"] if stack == "decoder" else [])
            for j, name in enumerate(sublayers):
                attn = ours + (ATTENTION[name],)
                rows += rms_norm(f"{hf}{j}.layer_norm", ours + (ATTENTION[name] + "_norm",), D)
                for part, proj in (("q", "query"), ("k", "key"), ("v", "value")):
                    rows += linear(f"{hf}{j}.{name}.{part}", attn + (proj,), (D,), (H, hd),
                                   bias=False)
                rows += linear(f"{hf}{j}.{name}.o", attn + ("out",), (H, hd), (D,), bias=False)
            j = len(sublayers)
            ffn = ours + ("feed_forward",)
            rows += rms_norm(f"{hf}{j}.layer_norm", ours + ("feed_forward_norm",), D)
            inputs = [("wi_0", "gate"), ("wi_1", "up")] if gated_ffn else [("wi", "up")]
            for part, ours_name in inputs:
                rows += linear(f"{hf}{j}.DenseReluDense.{part}", ffn + (ours_name,), (D,), (F,),
                               bias=False)
            rows += linear(f"{hf}{j}.DenseReluDense.wo", ffn + ("down",), (F,), (D,), bias=False)
    if not c.tie_embeddings:
        rows.append(vocab_table("lm_head.weight", V, D, ("lm_head", "kernel"), c.padded_vocab_size,
                                transpose=True))
    return rows


# Tied copies of `shared` that some versions save, and a cross-attention bias table old
# checkpoints carry although T5 never uses it.
IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
           "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")
