"""Attention written out one (query, key) pair at a time: the reference the attention kernels are
checked against. Nothing here calls the library."""

import math

import numpy as np


def child_et_al(kind, i, j, *, l=0, c=0, w=0, g=0):
    """The sparse patterns as their papers state them, one pair at a time (no causality):
    sliding (|i - j| < w), strided and fixed (Child et al. 2019, stride l, c summary columns),
    global_local (Longformer: a window plus g global tokens)."""
    if kind == "sliding":
        return abs(i - j) < w
    if kind == "strided":  # A1: the previous l tokens; A2: (i - j) mod l == 0
        return abs(i - j) <= l or (i - j) % l == 0
    if kind == "fixed":  # A1: same block of l; A2: j mod l in {l - c, ..., l - 1}
        return i // l == j // l or j % l in range(l - c, l)
    return abs(i - j) < w or i < g or j < g


def pattern_pair(pattern):
    """A `SparsePattern`'s published definition as a function of (query, key) index, or None."""
    if pattern is None:
        return None
    return lambda i, j: child_et_al(pattern.kind, i, j, l=pattern.stride, c=pattern.summary,
                                    w=pattern.window, g=pattern.global_tokens)


def naive_mask(q_pos, k_pos, q_seg, k_seg, *, causal, window=None, allowed=None):
    """[batch, q_time, k_time] bool, one pair at a time: causal means key <= query; a window of w
    keeps keys with |query - key| < w; `allowed(i, j)` a sparse pattern's pairs; segment 0 is
    padding; other segments see only themselves."""
    batch, tq = q_pos.shape
    tk = k_pos.shape[1]
    mask = np.zeros((batch, tq, tk), bool)
    for b in range(batch):
        for i in range(tq):
            for j in range(tk):
                d = q_pos[b, i] - k_pos[b, j]
                ok = True
                if causal and d < 0:
                    ok = False
                if window is not None and abs(d) >= window:
                    ok = False
                if allowed is not None and not allowed(int(q_pos[b, i]), int(k_pos[b, j])):
                    ok = False
                if k_seg is not None:
                    if k_seg[b, j] == 0:
                        ok = False
                    if q_seg is not None and q_seg[b, i] != k_seg[b, j]:
                        ok = False
                mask[b, i, j] = ok
    return mask


def naive_attention(q, k, v, mask, bias=None, scale=None):
    """q [b, tq, h, d], k/v [b, tk, kvh, d] (query head h reads kv head h // (h_total / kvh)),
    mask [b, tq, tk], bias [b, h, tq, tk]; scores times `scale` (default 1 / sqrt(d)). Rows with
    no visible key are returned as zeros."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    batch, tq, heads, dim = q.shape
    scale = 1 / math.sqrt(dim) if scale is None else scale
    group = heads // k.shape[2]
    out = np.zeros_like(q)
    for b in range(batch):
        for h in range(heads):
            kh = h // group
            for i in range(tq):
                scores = np.array([q[b, i, h] @ k[b, j, kh] * scale for j in range(k.shape[1])])
                if bias is not None:
                    scores = scores + bias[b, h, i]
                visible = mask[b, i]
                if not visible.any():
                    continue
                s = np.where(visible, scores, -np.inf)
                w = np.exp(s - s.max())
                w /= w.sum()
                out[b, i, h] = w @ v[b, :, kh]
    return out


def random_qkv(seed, batch=2, tq=7, tk=7, heads=4, kv_heads=4, dim=8):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, tq, heads, dim)).astype(np.float32)
    k = rng.standard_normal((batch, tk, kv_heads, dim)).astype(np.float32)
    v = rng.standard_normal((batch, tk, kv_heads, dim)).astype(np.float32)
    return q, k, v


def indices(batch, time):
    return np.broadcast_to(np.arange(time), (batch, time))
