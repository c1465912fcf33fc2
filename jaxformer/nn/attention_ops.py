"""Scaled dot-product attention: the mask, and two interchangeable implementations.

Layout throughout: q [batch, q_time, heads, head_dim], k/v [batch, k_time, kv_heads, head_dim],
with kv_heads dividing heads (GQA; kv_heads == 1 is MQA). Query head h reads key/value head
h // (heads // kv_heads), the grouping that HF and `jax.nn.dot_product_attention` both use.

- `einsum_attention`: softmax(q k^T * scale + bias, masked) v written out, returning the weights too
  (for inspection and plots).
- `xla_attention`: `jax.nn.dot_product_attention`, which XLA fuses and which can call cuDNN's flash
  kernel on GPUs.
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
