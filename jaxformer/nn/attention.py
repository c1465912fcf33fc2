"""Multi-head attention: self-attention (grouped key/value heads, position schemes, masks, a KV
cache) and cross-attention over an encoder's output, in one module."""

import logging
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn import attention_kernels, attention_ops, kv_cache
from jaxformer.nn.context import BlockContext
from jaxformer.nn.kv_cache import KVCache, MemoryCache
from jaxformer.nn.linear import Linear
from jaxformer.nn.platform import compute_platform
from jaxformer.nn.params import Initializer, normal
from jaxformer.nn.positions import RopeScaling, alibi_bias, alibi_slopes, apply_rope
from jaxformer.nn.ring_attention import context_parallelism, ring_attention
from jaxformer.nn.sparse_attention import SparsePattern


class Attention(nnx.Module):
    """softmax(q k^T / sqrt(head_dim) + bias) v over `num_heads` query heads and `num_kv_heads`
    key/value heads (= num_heads: MHA; 1: MQA; in between: GQA).

    Self-attention reads keys and values from its own input. Given `kv` (the memory, e.g. an
    encoder's output) it is cross-attention: keys and values come from the memory, no causal
    mask, no position scheme (RoPE / ALiBi apply to self-attention only). `cross=True` marks a
    module built to be a block's cross-attention sublayer (it then reads `BlockContext.memory`).

    `position` selects what happens inside self-attention: "rope" rotates q and k, "alibi" adds a
    distance bias; anything else ("learned", "sinusoidal", "none") leaves it to the embedding.

    `pattern` (a `SparsePattern`: sliding, strided, fixed, global_local; `sliding_window=w` is
    the sliding one) restricts which keys a query sees. `implementation` picks the kernel for
    uncached self-attention (see attention_kernels.py: xla, einsum, chunked, cudnn, splash,
    pallas_gpu, auto); under a mesh with a `context` axis it runs as ring attention.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        use_bias: bool = False,
        causal: bool = True,
        cross: bool = False,
        position: str = "none",
        rope_theta: float = 10000.0,
        rope_scaling: RopeScaling | None = None,
        sliding_window: int | None = None,
        pattern: SparsePattern | None = None,
        implementation: str = "xla",
        scale: float | None = None,
        init: Initializer | None = None,
        out_init: Initializer | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        num_kv_heads = num_kv_heads or num_heads
        head_dim = head_dim or d_model // num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        if implementation not in attention_ops.IMPLEMENTATIONS:
            raise ValueError(f"unknown attention implementation {implementation!r}: "
                             f"use one of {attention_ops.IMPLEMENTATIONS}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.causal, self.cross = causal and not cross, cross
        self.position, self.sliding_window = position, sliding_window
        if pattern is None and sliding_window is not None:
            pattern = SparsePattern("sliding", window=sliding_window)
        self.pattern = pattern
        self.rope_theta, self.rope_scaling = rope_theta, rope_scaling
        self.implementation = implementation
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        init = init or normal(0.02)
        self.query = Linear(d_model, (num_heads, head_dim), in_axes=("embed",),
                            out_axes=("heads", "head_dim"), init=init, **common)
        self.key = Linear(d_model, (num_kv_heads, head_dim), in_axes=("embed",),
                          out_axes=("kv_heads", "head_dim"), init=init, **common)
        self.value = Linear(d_model, (num_kv_heads, head_dim), in_axes=("embed",),
                            out_axes=("kv_heads", "head_dim"), init=init, **common)
        self.out = Linear((num_heads, head_dim), d_model, in_axes=("heads", "head_dim"),
                          out_axes=("embed",), init=out_init or init, **common)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | MemoryCache | None = None,
        *,
        kv: jax.Array | None = None,
        kv_segment_ids: jax.Array | None = None,
        bias: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | MemoryCache | None]:
        """x: [batch, time, embed]; positions, segment_ids: [batch, time] (segment 0 = padding).

        Self-attention (no `kv`): without a cache, token i attends to tokens j of the same segment
        (j <= i if causal). With a `KVCache`, the new keys and values are written at `positions`
        and the queries attend over every filled slot at or before their own position.

        Cross-attention: `kv` [batch, memory_len, embed] with `kv_segment_ids` [batch, memory_len]
        (0 = padding; default: no padding). Queries attend to every real memory token (of the same
        segment, when both sides carry segment ids). With a `MemoryCache` and `kv`, the memory's
        keys and values are computed and stored; with the cache and no `kv`, they are read from it.

        `bias` [batch or 1, heads, time, key_time] is added to the self-attention scores (T5's
        relative position bias); with a KVCache its key axis is the cache's slots.

        Returns (output [batch, time, embed], the updated cache or None).
        """
        if kv is not None or isinstance(cache, MemoryCache):
            return self._cross_attention(x, segment_ids, cache, kv, kv_segment_ids)
        if positions is None:
            raise ValueError("self-attention needs positions [batch, time]")
        batch, time, _ = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        if self.position == "rope":
            q = apply_rope(q, positions, self.rope_theta, self.rope_scaling)
            k = apply_rope(k, positions, self.rope_theta, self.rope_scaling)

        if cache is None:
            out = self._uncached(q, k, v, segment_ids, bias)
            if out is not None:
                return self.out(out), cache
            q_index = k_index = jnp.broadcast_to(jnp.arange(time), (batch, time))
            k_segment_ids = segment_ids
        else:
            if segment_ids is None:
                segment_ids = jnp.ones((batch, time), jnp.int32)
            cache = kv_cache.write(cache, k, v, positions, segment_ids)
            k_segment_ids = cache.segment_ids
            q_index = positions
            k_index = jnp.broadcast_to(jnp.arange(k_segment_ids.shape[1]), k_segment_ids.shape)

        if self.position == "alibi":
            alibi = alibi_bias(self.num_heads, q_index, k_index, self.causal)
            bias = alibi if bias is None else bias + alibi
        # With nothing but a plain causal (or no) mask, let the kernel build it: that is the case
        # cuDNN's flash attention handles fastest.
        mask = None
        if (cache is not None or k_segment_ids is not None or bias is not None
                or self.pattern is not None or self.implementation == "einsum"):
            mask = attention_ops.attention_mask(q_index, k_index, segment_ids, k_segment_ids,
                                                causal=self.causal, pattern=self.pattern)
        if cache is not None:
            out, weights = attention_ops.cached_attention(q, cache.k, cache.v, mask, bias,
                                                          scale=self.scale)
        else:
            out, weights = self._attend(q, k, v, mask, bias, causal=self.causal)
        self._record(weights)
        return self.out(out), cache

    def _uncached(self, q, k, v, segment_ids, bias=None):
        """Self-attention without a cache through a kernel other than the dense xla/einsum path
        (None: the caller runs that path), or as ring attention under a `context` mesh axis.
        An additive score `bias` (T5's relative positions) needs the dense path."""
        slopes = alibi_slopes(self.num_heads) if self.position == "alibi" else None
        if bias is not None:
            if context_parallelism() > 1:
                raise ValueError("ring attention (mesh.context > 1) cannot add a score bias such as "
                                 "T5's relative positions: set mesh.context=1")
            if self.implementation not in ("xla", "einsum"):
                attention_kernels.say_once(
                    f"attention_impl={self.implementation} cannot add a score bias (T5's relative "
                    f"positions), falling back to xla", logging.WARNING)
            return None
        if context_parallelism() > 1:
            if (self.pattern is not None and self.pattern.kind != "sliding") or slopes is not None:
                raise ValueError("ring attention (mesh.context > 1) supports causal or full masks, "
                                 "segments and sliding windows; not sparse patterns or ALiBi")
            window = self.pattern.window if self.pattern is not None else None
            return ring_attention(q, k, v, segment_ids, scale=self.scale, causal=self.causal,
                                  window=window)
        if self.implementation in ("xla", "einsum"):
            return None
        return attention_kernels.self_attention(
            q, k, v, segment_ids, requested=self.implementation, causal=self.causal,
            pattern=self.pattern, scale=self.scale, alibi_slopes=slopes)

    def _cross_attention(self, x, segment_ids, cache, kv, kv_segment_ids):
        batch, time, _ = x.shape
        q = self.query(x)
        if kv is not None:
            k, v = self.key(kv), self.value(kv)
            if kv_segment_ids is None:
                kv_segment_ids = jnp.ones(kv.shape[:2], jnp.int32)
            if cache is not None:
                cache = MemoryCache(k=kv_cache.heads_major(k).astype(cache.k.dtype),
                                    v=kv_cache.heads_major(v).astype(cache.v.dtype),
                                    segment_ids=kv_segment_ids.astype(jnp.int32))
        else:
            kv_segment_ids = cache.segment_ids
        # Only padding and segments matter across the two sequences: no causal mask, no window.
        indices = jnp.zeros((batch, time), jnp.int32), jnp.zeros(kv_segment_ids.shape, jnp.int32)
        mask = attention_ops.attention_mask(*indices, segment_ids, kv_segment_ids, causal=False)
        if cache is not None:
            out, weights = attention_ops.cached_attention(q, cache.k, cache.v, mask, None,
                                                          scale=self.scale)
        else:
            out, weights = self._attend(q, k, v, mask, None, causal=False)
        self._record(weights)
        return self.out(out), cache

    def _attend(self, q, k, v, mask, bias, *, causal: bool):
        """Uncached attention with the configured implementation: (out, weights or None).

        `causal`: causal self-attention (the mask, if any, already causal). Where
        `attention_kernels.blocked_causal_here` says so (on a CPU) the `xla` implementation then
        runs `blocked_causal_attention`, which skips the masked triangle; elsewhere
        `jax.nn.dot_product_attention`, which can take cuDNN's flash kernel."""
        if self.implementation == "einsum":
            return attention_ops.einsum_attention(q, k, v, mask, bias, scale=self.scale)
        if attention_kernels.blocked_causal_here(causal, compute_platform()):
            return attention_ops.blocked_causal_attention(q, k, v, mask, bias,
                                                          scale=self.scale), None
        return attention_ops.xla_attention(q, k, v, mask, bias, scale=self.scale,
                                           is_causal=causal and mask is None), None

    def _record(self, weights) -> None:
        # Recorded for `nnx.capture(model, nnx.Intermediate)` (jaxformer attention); outside a
        # capture flax would store them on the module, which it deprecates.
        if weights is not None and self.implementation == "einsum" and hasattr(self, "__captures__"):
            self.sow(nnx.Intermediate, "attention_weights", weights)

    def as_sublayer(self, x: jax.Array, ctx: BlockContext, cache):
        """The block's call: (output, cache, aux losses). A cross-attention module reads the
        memory from the context (or, while decoding, from its `MemoryCache`)."""
        if self.cross:
            if ctx.memory is None and not isinstance(cache, MemoryCache):
                raise ValueError("a cross-attention sublayer needs the memory (an encoder's "
                                 "output) in the block context, or a filled MemoryCache")
            y, cache = self(x, ctx.positions, ctx.segment_ids, cache, kv=ctx.memory,
                            kv_segment_ids=ctx.memory_segment_ids)
        else:
            y, cache = self(x, ctx.positions, ctx.segment_ids, cache, bias=ctx.attention_bias)
        return y, cache, {}
