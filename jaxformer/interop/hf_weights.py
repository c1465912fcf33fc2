"""Weight tables: which HF tensor becomes which jaxformer parameter, one function per architecture.

Each `Tensor` row names one HF tensor, the shape config.json implies for it, the jaxformer
parameter path(s) it fills, and the two layout changes (HF -> jaxformer and back). Import and
export both read these tables, so they cannot drift apart.

Layouts. jaxformer kernels are [in, out] with heads as their own axes: query [embed, heads,
head_dim], key/value [embed, kv_heads, head_dim], out [heads, head_dim, embed]; feed-forward
up/gate [embed, mlp], down [mlp, embed]; lm_head [embed, vocab]. HF GPT-2 uses Conv1D, already
[in, out], with q|k|v concatenated on the last axis of `c_attn`. HF Llama uses nn.Linear, [out, in].
Llama's RoPE rotates halves exactly as `jaxformer.nn.apply_rope` does, so q/k need no permutation.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxformer.interop.hf_config import GPT2, LLAMA
from jaxformer.models.config import DecoderConfig

ParamPath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str  # HF tensor name
    shape: tuple[int, ...]  # its shape in the HF file
    params: tuple[ParamPath, ...]  # the jaxformer parameters it fills
    to_jax: Callable[[np.ndarray], tuple[np.ndarray, ...]]  # HF array -> one array per param
    to_hf: Callable[..., np.ndarray]  # the params' arrays -> HF array


def reshaped(name: str, hf_shape: tuple[int, ...], path: ParamPath, shape: tuple[int, ...],
             *, transpose: bool = False) -> Tensor:
    """One HF tensor to one parameter: optionally transposed ([out, in] -> [in, out]), then
    reshaped (e.g. [embed, heads * head_dim] -> [embed, heads, head_dim])."""

    def to_jax(w):
        return ((w.T if transpose else w).reshape(shape),)

    def to_hf(p):
        return p.reshape(hf_shape[::-1]).T if transpose else p.reshape(hf_shape)

    return Tensor(name, tuple(hf_shape), (path,), to_jax, to_hf)


def fused_qkv(name: str, hf_shape: tuple[int, ...], prefix: ParamPath, suffix: str,
              heads: int, head_dim: int) -> Tensor:
    """GPT-2's c_attn: [..., 3 * heads * head_dim] with q|k|v on the last axis -> three
    [..., heads, head_dim] parameters."""
    paths = tuple(prefix + (part, suffix) for part in ("query", "key", "value"))

    def to_jax(w):
        split = w.reshape(*w.shape[:-1], 3, heads, head_dim)
        return tuple(np.moveaxis(split, -3, 0))

    def to_hf(q, k, v):
        return np.stack([q, k, v], axis=-3).reshape(hf_shape)

    return Tensor(name, tuple(hf_shape), paths, to_jax, to_hf)


def gpt2_tensors(c: DecoderConfig) -> list[Tensor]:
    D, V, P, I, H, hd = c.d_model, c.vocab_size, c.max_seq_len, c.ffn_dim, c.num_heads, c.head_size
    rows = [
        reshaped("transformer.wte.weight", (V, D), ("embed", "embedding"), (V, D)),
        reshaped("transformer.wpe.weight", (P, D), ("position_embedding", "embedding"), (P, D)),
        reshaped("transformer.ln_f.weight", (D,), ("final_norm", "scale"), (D,)),
        reshaped("transformer.ln_f.bias", (D,), ("final_norm", "bias"), (D,)),
    ]
    for i in range(c.num_layers):
        hf, ours = f"transformer.h.{i}.", ("layers", i)
        attn, ffn = ours + ("attention",), ours + ("feed_forward",)
        rows += [
            reshaped(hf + "ln_1.weight", (D,), ours + ("attention_norm", "scale"), (D,)),
            reshaped(hf + "ln_1.bias", (D,), ours + ("attention_norm", "bias"), (D,)),
            fused_qkv(hf + "attn.c_attn.weight", (D, 3 * D), attn, "kernel", H, hd),
            fused_qkv(hf + "attn.c_attn.bias", (3 * D,), attn, "bias", H, hd),
            reshaped(hf + "attn.c_proj.weight", (D, D), attn + ("out", "kernel"), (H, hd, D)),
            reshaped(hf + "attn.c_proj.bias", (D,), attn + ("out", "bias"), (D,)),
            reshaped(hf + "ln_2.weight", (D,), ours + ("ffn_norm", "scale"), (D,)),
            reshaped(hf + "ln_2.bias", (D,), ours + ("ffn_norm", "bias"), (D,)),
            reshaped(hf + "mlp.c_fc.weight", (D, I), ffn + ("up", "kernel"), (D, I)),
            reshaped(hf + "mlp.c_fc.bias", (I,), ffn + ("up", "bias"), (I,)),
            reshaped(hf + "mlp.c_proj.weight", (I, D), ffn + ("down", "kernel"), (I, D)),
            reshaped(hf + "mlp.c_proj.bias", (D,), ffn + ("down", "bias"), (D,)),
        ]
    if not c.tie_embeddings:
        rows.append(reshaped("lm_head.weight", (V, D), ("lm_head", "kernel"), (D, V), transpose=True))
    return rows


def llama_tensors(c: DecoderConfig) -> list[Tensor]:
    D, V, I = c.d_model, c.vocab_size, c.ffn_dim
    H, KV, hd = c.num_heads, c.kv_heads, c.head_size
    rows = [
        reshaped("model.embed_tokens.weight", (V, D), ("embed", "embedding"), (V, D)),
        reshaped("model.norm.weight", (D,), ("final_norm", "scale"), (D,)),
    ]
    for i in range(c.num_layers):
        hf, ours = f"model.layers.{i}.", ("layers", i)
        attn, ffn = ours + ("attention",), ours + ("feed_forward",)
        # (HF projection, jaxformer module, HF weight [out, in], our kernel [in, out], our bias)
        projections = [
            ("self_attn.q_proj", attn + ("query",), (H * hd, D), (D, H, hd), (H, hd)),
            ("self_attn.k_proj", attn + ("key",), (KV * hd, D), (D, KV, hd), (KV, hd)),
            ("self_attn.v_proj", attn + ("value",), (KV * hd, D), (D, KV, hd), (KV, hd)),
            ("self_attn.o_proj", attn + ("out",), (D, H * hd), (H, hd, D), (D,)),
            ("mlp.gate_proj", ffn + ("gate",), (I, D), (D, I), (I,)),  # the activated branch
            ("mlp.up_proj", ffn + ("up",), (I, D), (D, I), (I,)),
            ("mlp.down_proj", ffn + ("down",), (D, I), (I, D), (D,)),
        ]
        rows += [
            reshaped(hf + "input_layernorm.weight", (D,), ours + ("attention_norm", "scale"), (D,)),
            reshaped(hf + "post_attention_layernorm.weight", (D,), ours + ("ffn_norm", "scale"), (D,)),
        ]
        for name, path, hf_shape, kernel_shape, bias_shape in projections:
            rows.append(reshaped(hf + name + ".weight", hf_shape, path + ("kernel",), kernel_shape,
                                 transpose=True))
            if c.use_bias:  # attention_bias = mlp_bias = True
                rows.append(reshaped(hf + name + ".bias", hf_shape[:1], path + ("bias",), bias_shape))
    if not c.tie_embeddings:
        rows.append(reshaped("lm_head.weight", (V, D), ("lm_head", "kernel"), (D, V), transpose=True))
    return rows


TABLES = {GPT2: gpt2_tensors, LLAMA: llama_tensors}

# Non-parameter buffers that some HF versions saved next to the weights: the causal-mask buffers of
# old GPT-2 checkpoints and Llama's precomputed RoPE frequencies. Safe to skip.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")

# Older checkpoints were saved from the bare GPT2Model / LlamaModel, without these prefixes.
BASE_PREFIX = {GPT2: "transformer.", LLAMA: "model."}


def tensors(arch: str, config: DecoderConfig) -> list[Tensor]:
    return TABLES[arch](config)
