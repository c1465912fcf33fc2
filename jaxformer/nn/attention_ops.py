"""Scaled dot-product attention: the mask, and two interchangeable implementations.

Layout throughout: q [batch, q_time, heads, head_dim], k/v [batch, k_time, kv_heads, head_dim],
with kv_heads dividing heads (GQA; kv_heads == 1 is MQA). Query head h reads key/value head
h // (heads // kv_heads), the grouping that HF and `jax.nn.dot_product_attention` both use.

- `einsum_attention`: softmax(q k^T * scale + bias, masked) v written out, returning the weights too
  (for inspection and plots).
- `xla_attention`: `jax.nn.dot_product_attention`, which XLA fuses and which can call cuDNN's flash
  kernel on GPUs.
- `blocked_causal_attention`: causal self-attention one block of queries at a time, each block
  against only the keys a causal mask lets it see; what `xla` runs on a CPU (see its docstring).
"""

import jax
import jax.numpy as jnp

from jaxformer.nn.dropout import dropout

# xla, einsum: dense, here. The rest (and `auto`'s choice) live in attention_kernels.py.
IMPLEMENTATIONS = ("xla", "cudnn", "einsum", "chunked", "splash", "pallas_gpu", "auto")


def attention_mask(
    q_index: jax.Array,
    k_index: jax.Array,
    q_segment_ids: jax.Array | None,
    k_segment_ids: jax.Array | None,
    *,
    causal: bool,
    sliding_window: int | None = None,
    pattern=None,
) -> jax.Array:
    """Which keys each query may see: [batch, 1, q_time, k_time] bool.

    q_index/k_index: [batch, time] index of each token in the key/value sequence (in the KV cache
    that is the cache slot, i.e. the position); only read for `causal`, `sliding_window` or a
    `pattern` (a `SparsePattern`: which keys each query sees, by index; the dense reference of the
    block-sparse computation in chunked_attention.py).
    Segment ids keep packed documents apart; segment 0 marks padding, which no query attends to.
    """
    mask = jnp.ones((q_index.shape[0], q_index.shape[1], k_index.shape[1]), bool)
    if causal or sliding_window is not None:
        distance = q_index[:, :, None] - k_index[:, None, :]
        if causal:
            mask &= distance >= 0
        if sliding_window is not None:
            mask &= jnp.abs(distance) < sliding_window
    if pattern is not None:
        mask &= pattern.allowed(q_index[:, :, None], k_index[:, None, :])
    if k_segment_ids is not None:
        mask &= (k_segment_ids != 0)[:, None, :]
        if q_segment_ids is not None:
            mask &= q_segment_ids[:, :, None] == k_segment_ids[:, None, :]
    return mask[:, None, :, :]


def einsum_attention(q, k, v, mask=None, bias=None, *, scale: float, dropout_rate: float = 0.0,
                     dropout_rng: jax.Array | None = None):
    """Returns (out [batch, q_time, heads, head_dim], weights [batch, heads, q_time, k_time]).

    With `dropout_rng`, the attention probabilities are dropped at `dropout_rate` before they
    weight the values, as HF's BERT does (`attention_probs_dropout_prob`); the weights returned are
    then the dropped ones, as HF returns them."""
    batch, q_time, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    group = heads // kv_heads
    qg = q.reshape(batch, q_time, kv_heads, group, head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores.reshape(batch, heads, q_time, k.shape[1]) * scale
    weights = dropout(_masked_softmax(scores, mask, bias), dropout_rate, dropout_rng)
    wg = weights.reshape(batch, kv_heads, group, q_time, k.shape[1]).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", wg, v).reshape(batch, q_time, heads, head_dim)
    return out, weights


def cached_attention(q, k_cache, v_cache, mask=None, bias=None, *, scale: float):
    """Attention over a KV cache in its heads-major layout (see kv_cache.py).

    q: [batch, q_time, heads, head_dim]; k_cache/v_cache: [batch, kv_heads, k_time, head_dim].
    Returns (out [batch, q_time, heads, head_dim], weights [batch, heads, q_time, k_time]).
    """
    batch, q_time, heads, head_dim = q.shape
    kv_heads, k_time = k_cache.shape[1], k_cache.shape[2]
    group = heads // kv_heads
    qg = q.reshape(batch, q_time, kv_heads, group, head_dim)
    scores = jnp.einsum("btkgd,bksd->bkgts", qg, k_cache, preferred_element_type=jnp.float32)
    scores = scores.reshape(batch, heads, q_time, k_time) * scale
    weights = _masked_softmax(scores, mask, bias)
    wg = weights.reshape(batch, kv_heads, group, q_time, k_time).astype(v_cache.dtype)
    out = jnp.einsum("bkgts,bksd->btkgd", wg, v_cache).reshape(batch, q_time, heads, head_dim)
    return out, weights


def causal_query_block(time: int) -> int:
    """Queries per block of `blocked_causal_attention`: 64, or time / 8 past 512 tokens.

    Smaller blocks skip more of the masked triangle but make smaller products. On the 2-core AMD
    EPYC CPU (`python -m bench.causal_attention --block N`, GPT-2's 12 heads of 64, one run each):
    at 4 x 256 tokens 64-query blocks ran 2.16x faster than jax.nn.dot_product_attention, 128
    1.78x, one block of 256 1.40x; at 1 x 1,024 tokens 128-query blocks 1.99-2.23x, 256 1.92x."""
    return max(64, time // 8)


def blocked_causal_attention(q, k, v, mask=None, bias=None, *, scale: float,
                             block: int | None = None):
    """Causal self-attention computed one block of `block` queries at a time.

    The queries of rows [start, end) can see keys [0, end) at most, so each block's scores are
    taken against those keys only: with B blocks the two products do (B + 1) / (2B) of the dense
    work (5/8 at 4 blocks). Heads are moved ahead of the time axis first, so each product is a
    batch of plain [queries, head_dim] x [head_dim, keys] matmuls. On the 2-core AMD EPYC CPU this
    runs GPT-2's attention (4 x 256 tokens, 12 heads of 64) forward and backward 2.2x faster than
    jax.nn.dot_product_attention (`python -m bench.causal_attention`, median of 15 rounds).

    q [batch, time, heads, head_dim], k/v [batch, time, kv_heads, head_dim] (the same time: self-
    attention without a cache); mask [batch or 1, 1, time, time] bool (True: may attend; the
    causal mask is applied here either way) or None; bias [batch or 1, heads, time, time] or None.
    Returns out [batch, time, heads, head_dim] in v's dtype. Equal to the dense computation for
    every query that may see some key; a query that may see none (padding) gets the mean of the
    values up to its block's end instead of all of them (padding is left out of every loss, so
    nothing downstream reads it).
    """
    batch, time, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    group = heads // kv_heads
    block = block or causal_query_block(time)
    # Heads-major: q [batch, kv_heads, group, time, head_dim], k/v [batch, kv_heads, time, head_dim].
    qh = q.reshape(batch, time, kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    outs = []
    for start in range(0, time, block):
        end = min(start + block, time)
        rows = end - start
        # A GQA group's queries stack into one [group * rows, head_dim] operand per key head.
        qb = qh[:, :, :, start:end].reshape(batch, kv_heads, group * rows, head_dim)
        scores = jnp.einsum("bktd,bksd->bkts", qb, kh[:, :, :end],
                            preferred_element_type=jnp.float32) * scale
        scores = scores.reshape(batch, heads, rows, end)
        allowed = jnp.arange(start, end)[:, None] >= jnp.arange(end)[None, :]
        if mask is not None:
            allowed = allowed & mask[:, :, start:end, :end]
        block_bias = None if bias is None else bias[:, :, start:end, :end].astype(jnp.float32)
        weights = _masked_softmax(scores, allowed, block_bias).astype(v.dtype)
        weights = weights.reshape(batch, kv_heads, group * rows, end)
        out = jnp.einsum("bkts,bksd->bktd", weights, vh[:, :, :end])
        outs.append(out.reshape(batch, kv_heads, group, rows, head_dim))
    out = jnp.concatenate(outs, axis=3)
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, time, heads, head_dim)


def _masked_softmax(scores, mask, bias):
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        # A finite floor rather than -inf: a fully masked row (a padding query) then gets a uniform,
        # harmless distribution instead of NaNs that would poison the gradients.
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


def xla_attention(q, k, v, mask=None, bias=None, *, scale: float, is_causal: bool = False,
                  implementation: str | None = None):
    """`jax.nn.dot_product_attention`. With `is_causal` and no mask it can take the cuDNN flash
    path; `is_causal` is only correct when q and k cover the same span (see JAX_NOTES: the built-in
    causal mask is aligned top-left), so the KV-cache path passes an explicit mask instead."""
    if bias is not None:
        bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale, is_causal=is_causal,
                                        implementation=implementation)
