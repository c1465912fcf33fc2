"""Memory-efficient attention in pure JAX: online softmax over the live blocks of the mask.

The sequence is cut into blocks of `block` queries and `block` keys. Only (query block, key
block) pairs where some pair of tokens is allowed are computed (a causal mask keeps about half of
them, a sliding window a band, a sparse pattern far fewer; see `sparse_attention.py`). Each query
block keeps a running max, a running sum and a weighted sum of values (the online softmax of
Milakov & Gimelshein 2018, as in FlashAttention), so no [time, time] matrix ever exists.

The live pairs are packed into lanes: each lane handles whole query blocks one after another, and
one step of a `lax.scan` computes one (query block, key block) pair in every lane at once. Rows
with many live blocks share no lane, rows with few share one, so the scan runs for about
(live pairs / lanes) steps and its cost follows the live pairs, not time^2.

The backward pass (a custom VJP) recomputes the probabilities block by block from the saved
log-sum-exp, as FlashAttention does: memory O(time) in both directions. The log-sum-exp is an
output too, with its own cotangent, so partial results (the parts of a sparse pattern, the steps
of ring attention) merge exactly: `merge(out_a, lse_a, out_b, lse_b)`.

Layout: q [batch, q_time, heads, head_dim], k/v [batch, k_time, kv_heads, head_dim] (GQA: query
head h reads key/value head h // (heads // kv_heads)).
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.nn.sparse_attention import Part, SparsePattern, dense_part

NEG = -1e30  # finite "minus infinity": a fully masked row then stays free of NaNs
DEFAULT_BLOCK = 128


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """Which (query block, key block) pair each lane computes at each scan step: arrays [steps,
    lanes]. `first`/`last` mark where a lane starts and finishes a query block; padding steps
    have valid=False and point at the spare query block `num_q_blocks`."""

    block_q: int
    block_k: int
    num_q_blocks: int
    num_k_blocks: int
    q_blocks: np.ndarray
    k_blocks: np.ndarray
    valid: np.ndarray
    first: np.ndarray
    last: np.ndarray
    live_pairs: int

    @property
    def steps(self) -> int:
        return self.q_blocks.shape[0]


def schedule_from_liveness(live: np.ndarray, block_q: int, block_k: int) -> Schedule:
    """Pack the live pairs of `live` [q blocks, k blocks] into lanes (first-fit decreasing: every
    lane holds at most as many pairs as the fullest query block has)."""
    nq, nk = live.shape
    rows = [(qb, np.flatnonzero(live[qb])) for qb in range(nq) if live[qb].any()]
    steps = max((len(kbs) for _, kbs in rows), default=1)
    lanes: list[list[tuple[int, np.ndarray]]] = []
    room: list[int] = []
    for qb, kbs in sorted(rows, key=lambda r: -len(r[1])):
        for lane, free in enumerate(room):
            if free >= len(kbs):
                lanes[lane].append((qb, kbs))
                room[lane] -= len(kbs)
                break
        else:
            lanes.append([(qb, kbs)])
            room.append(steps - len(kbs))
    num_lanes = max(len(lanes), 1)
    shape = (steps, num_lanes)
    q_blocks = np.full(shape, nq, np.int32)
    k_blocks = np.zeros(shape, np.int32)
    valid, first, last = (np.zeros(shape, bool) for _ in range(3))
    for lane, members in enumerate(lanes):
        step = 0
        for qb, kbs in members:
            n = len(kbs)
            q_blocks[step:step + n, lane] = qb
            k_blocks[step:step + n, lane] = kbs
            valid[step:step + n, lane] = True
            first[step, lane] = True
            last[step + n - 1, lane] = True
            step += n
    return Schedule(block_q, block_k, nq, nk, q_blocks, k_blocks, valid, first, last,
                    int(live.sum()))


def block_liveness(part: Part, q_tokens: np.ndarray, k_tokens: np.ndarray, block_q: int,
                   block_k: int) -> np.ndarray:
    """[q blocks, k blocks] bool: whether any (query, key) token pair of the block is allowed.
    Exact: far blocks are ruled out by `part.reach`, the rest tested pair by pair (or, for a part
    that is exactly its reach over tokens in order, from the blocks' ranges)."""
    q_pad = _pad_tokens(q_tokens, block_q).reshape(-1, block_q)
    k_pad = _pad_tokens(k_tokens, block_k).reshape(-1, block_k)
    q_min, q_max = q_pad.min(1), q_pad.max(1)
    k_min, k_max = k_pad.min(1), k_pad.max(1)
    lo, hi = part.reach if part.reach is not None else (None, None)
    candidates = np.ones((len(q_pad), len(k_pad)), bool)
    if hi is not None:  # some j >= i - hi
        candidates &= k_max[None, :] >= q_min[:, None] - hi
    if lo is not None:  # some j <= i - lo
        candidates &= k_min[None, :] <= q_max[:, None] - lo
    if part.band and _in_order(q_tokens) and _in_order(k_tokens):
        return candidates  # contiguous ranges: overlapping reach means some pair is allowed
    live = np.zeros_like(candidates)
    k_real = len(k_tokens)
    for qb in range(len(q_pad)):
        kbs = np.flatnonzero(candidates[qb])
        if not len(kbs):
            continue
        qi = q_tokens[qb * block_q:(qb + 1) * block_q]
        kj = k_pad[kbs]  # [candidates, block_k]
        real = (kbs[:, None] * block_k + np.arange(block_k)[None, :]) < k_real
        ok = part.allowed(qi[:, None, None], kj[None]) & real[None]
        live[qb, kbs] = ok.any(axis=(0, 2))
    return live


def _in_order(tokens: np.ndarray) -> bool:
    return bool(np.all(np.diff(tokens) == 1)) if len(tokens) > 1 else True


@dataclasses.dataclass(frozen=True, eq=False)
class PlannedPart:
    part: Part
    schedule: Schedule
    q_tokens: np.ndarray  # token index of each query this part reads (padded to whole blocks)
    k_tokens: np.ndarray
    q_count: int  # real queries / keys before padding
    k_count: int


@functools.lru_cache(maxsize=64)
def plan(pattern: SparsePattern | None, causal: bool, q_len: int, k_len: int,
         block: int = DEFAULT_BLOCK) -> tuple[PlannedPart, ...]:
    """The parts of a mask with their schedules, computed once per shape (numpy, at trace time).
    Parts without a live block are dropped."""
    parts = pattern.parts(causal, q_len) if pattern is not None else (dense_part(causal),)
    planned = []
    for part in parts:
        q_tok = np.arange(q_len) if part.q_tokens is None else np.asarray(part.q_tokens)
        k_tok = np.arange(k_len) if part.k_tokens is None else np.asarray(part.k_tokens)
        if not len(q_tok) or not len(k_tok):
            continue
        bq, bk = min(block, _round8(len(q_tok))), min(block, _round8(len(k_tok)))
        live = block_liveness(part, q_tok, k_tok, bq, bk)
        if not live.any():
            continue
        schedule = schedule_from_liveness(live, bq, bk)
        planned.append(PlannedPart(part, schedule, _pad_tokens(q_tok, bq), _pad_tokens(k_tok, bk),
                                   len(q_tok), len(k_tok)))
    return tuple(planned)


def _round8(n: int) -> int:
    return -(-n // 8) * 8


def _pad_tokens(tokens: np.ndarray, block: int) -> np.ndarray:
    """Padding slots get indices past the end; their keys are masked as padding."""
    pad = -len(tokens) % block
    return np.concatenate([tokens, np.arange(pad) + (tokens.max() + 1 if len(tokens) else 0)]).astype(np.int32)


# --- the kernel: one part, one schedule ---


def _blocks(x, block):
    """[batch, time, ...] -> [batch, time // block, block, ...]."""
    return x.reshape(x.shape[0], x.shape[1] // block, block, *x.shape[2:])


def _scores(q_blk, k_blk, scale):
    # q_blk [b, lanes, bq, kv, g, d], k_blk [b, lanes, bk, kv, d] -> [b, lanes, kv, g, bq, bk]
    return jnp.einsum("bvqhgd,bvkhd->bvhgqk", q_blk, k_blk, preferred_element_type=jnp.float32) * scale


@dataclasses.dataclass(frozen=True)
class Kernel:
    attend: Callable  # (q, k, v, q_idx, k_idx, q_seg, k_seg) -> (out, lse), differentiable
    forward: Callable  # the same without the custom VJP
    backward: Callable  # (..., out, lse, d_out, d_lse) -> (dq, dk, dv)


@functools.lru_cache(maxsize=256)
def kernel(schedule: Schedule, allowed: Callable, scale: float, slopes: tuple | None,
            causal_alibi: bool, has_segments: bool):
    """(q, k, v, q_idx, k_idx, q_seg, k_seg) -> (out, lse) for inputs already padded to whole
    blocks, with a custom VJP. q_idx/k_idx: [time] token indices; q_seg/k_seg: [batch, time]."""
    s = schedule
    bq, bk, nq = s.block_q, s.block_k, s.num_q_blocks
    # numpy here (the kernel is cached across traces); made into arrays inside each trace
    xs_np = (s.q_blocks, s.k_blocks, s.valid, s.first, s.last)

    def masks_and_scores(q_blk, k_blk, qi, ki, qseg, kseg, valid):
        scores = _scores(q_blk, k_blk, scale)
        mask = allowed(qi[:, :, None], ki[:, None, :]) & valid[:, None, None]  # [lanes, bq, bk]
        mask = mask[None]
        if has_segments:
            mask = mask & (kseg[:, :, None, :] != 0) & (qseg[:, :, :, None] == kseg[:, :, None, :])
        if slopes is not None:
            distance = (qi[:, :, None] - ki[:, None, :]).astype(jnp.float32)
            distance = distance if causal_alibi else jnp.abs(distance)
            h, g = scores.shape[2], scores.shape[3]
            slope = jnp.asarray(slopes, jnp.float32).reshape(h, g)
            scores = scores - slope[None, None, :, :, None, None] * distance[None, :, None, None]
        mask = mask[:, :, None, None]  # [b or 1, lanes, 1, 1, bq, bk]
        return jnp.where(mask, scores, NEG), mask

    def gather(q, k, v, q_idx, k_idx, q_seg, k_seg, qb, kb):
        q_blk = jnp.take(q, qb, axis=1)
        k_blk, v_blk = jnp.take(k, kb, axis=1), jnp.take(v, kb, axis=1)
        qi, ki = jnp.take(q_idx, qb, axis=0), jnp.take(k_idx, kb, axis=0)
        qseg = jnp.take(q_seg, qb, axis=1) if has_segments else None
        kseg = jnp.take(k_seg, kb, axis=1) if has_segments else None
        return q_blk, k_blk, v_blk, qi, ki, qseg, kseg

    def prepare(q, k, v, q_idx, k_idx, q_seg, k_seg):
        """Blocked views with one spare query block (index nq) for padding steps to land in."""
        batch, _, heads, d = q.shape
        kv = k.shape[2]
        q = _blocks(q, bq).reshape(batch, nq, bq, kv, heads // kv, d)
        q = jnp.concatenate([q, jnp.zeros_like(q[:, :1])], axis=1)
        q_idx = jnp.concatenate([q_idx.reshape(nq, bq), jnp.zeros((1, bq), q_idx.dtype)])
        if has_segments:
            q_seg = jnp.concatenate([_blocks(q_seg, bq), jnp.zeros_like(_blocks(q_seg, bq)[:, :1])], 1)
            k_seg = _blocks(k_seg, bk)
        return q, _blocks(k, bk), _blocks(v, bk), q_idx, k_idx.reshape(-1, bk), q_seg, k_seg

    def forward(q, k, v, q_idx, k_idx, q_seg, k_seg):
        batch, q_time, heads, d = q.shape
        kv = k.shape[2]
        g = heads // kv
        qp, kp, vp, qi_b, ki_b, qs_b, ks_b = prepare(q, k, v, q_idx, k_idx, q_seg, k_seg)
        lanes = s.q_blocks.shape[1]
        stat = jnp.full((batch, lanes, kv, g, bq), NEG, jnp.float32)
        acc0 = jnp.zeros((batch, lanes, bq, kv, g, d), jnp.float32)
        out0 = jnp.zeros((batch, nq + 1, bq, kv, g, d), jnp.float32)
        lse0 = jnp.full((batch, nq + 1, kv, g, bq), NEG, jnp.float32)

        def step(carry, x):
            m, l, acc, out, lse = carry
            qb, kb, valid, first, last = x
            q_blk, k_blk, v_blk, qi, ki, qseg, kseg = gather(qp, kp, vp, qi_b, ki_b, qs_b, ks_b, qb, kb)
            reset = first[None, :, None, None, None]
            m = jnp.where(reset, NEG, m)
            l = jnp.where(reset, 0.0, l)
            acc = jnp.where(first[None, :, None, None, None, None], 0.0, acc)
            scores, mask = masks_and_scores(q_blk, k_blk, qi, ki, qseg, kseg, valid)
            m_new = jnp.maximum(m, scores.max(-1))
            p = jnp.where(mask, jnp.exp(scores - m_new[..., None]), 0.0)
            correction = jnp.exp(m - m_new)
            l = l * correction + p.sum(-1)
            pv = jnp.einsum("bvhgqk,bvkhd->bvqhgd", p.astype(v_blk.dtype), v_blk,
                            preferred_element_type=jnp.float32)
            acc = acc * jnp.moveaxis(correction, -1, 2)[..., None] + pv
            m = m_new
            done = jnp.where(last, qb, nq)
            out = out.at[:, done].set(acc / jnp.moveaxis(jnp.where(l > 0, l, 1.0), -1, 2)[..., None])
            lse = lse.at[:, done].set(jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), NEG))
            return (m, l, acc, out, lse), None

        (_, _, _, out, lse), _ = jax.lax.scan(step, (stat, jnp.zeros_like(stat), acc0, out0, lse0),
                                            tuple(map(jnp.asarray, xs_np)))
        out = out[:, :nq].reshape(batch, q_time, heads, d).astype(q.dtype)
        lse = jnp.moveaxis(lse[:, :nq], -1, 2).reshape(batch, q_time, heads)  # [b, t, heads]
        return out, lse

    @jax.custom_vjp
    def attend(q, k, v, q_idx, k_idx, q_seg, k_seg):
        return forward(q, k, v, q_idx, k_idx, q_seg, k_seg)

    def attend_fwd(q, k, v, q_idx, k_idx, q_seg, k_seg):
        out, lse = forward(q, k, v, q_idx, k_idx, q_seg, k_seg)
        return (out, lse), (q, k, v, q_idx, k_idx, q_seg, k_seg, out, lse)

    def backward(q, k, v, q_idx, k_idx, q_seg, k_seg, out, lse, d_out, d_lse):
        """(dq, dk, dv) of the keys this schedule covers, given the output and log-sum-exp of the
        whole attention (which may span more keys: ring attention's other steps)."""
        batch, q_time, heads, d = q.shape
        kv = k.shape[2]
        g = heads // kv
        qp, kp, vp, qi_b, ki_b, qs_b, ks_b = prepare(q, k, v, q_idx, k_idx, q_seg, k_seg)

        def per_query(x):  # [b, t, heads] -> [b, nq + 1, kv, g, bq]
            x = jnp.moveaxis(x.reshape(batch, nq, bq, kv, g), 2, -1)
            return jnp.concatenate([x, jnp.zeros_like(x[:, :1])], axis=1)

        delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)
        delta, lse_b, d_lse_b = per_query(delta), per_query(lse), per_query(d_lse.astype(jnp.float32))
        dop = _blocks(d_out, bq).reshape(batch, nq, bq, kv, g, d)
        dop = jnp.concatenate([dop, jnp.zeros_like(dop[:, :1])], axis=1)
        lanes = s.q_blocks.shape[1]

        def step(carry, x):
            dq_acc, dq, dk, dv = carry
            qb, kb, valid, first, last = x
            q_blk, k_blk, v_blk, qi, ki, qseg, kseg = gather(qp, kp, vp, qi_b, ki_b, qs_b, ks_b, qb, kb)
            do_blk = jnp.take(dop, qb, axis=1)
            scores, mask = masks_and_scores(q_blk, k_blk, qi, ki, qseg, kseg, valid)
            p = jnp.where(mask, jnp.exp(scores - jnp.take(lse_b, qb, axis=1)[..., None]), 0.0)
            dv_blk = jnp.einsum("bvhgqk,bvqhgd->bvkhd", p.astype(do_blk.dtype), do_blk,
                                preferred_element_type=jnp.float32)
            dp = jnp.einsum("bvqhgd,bvkhd->bvhgqk", do_blk, v_blk, preferred_element_type=jnp.float32)
            ds = p * (dp - jnp.take(delta, qb, axis=1)[..., None] + jnp.take(d_lse_b, qb, axis=1)[..., None])
            dq_acc = jnp.where(first[None, :, None, None, None, None], 0.0, dq_acc)
            dq_acc = dq_acc + jnp.einsum("bvhgqk,bvkhd->bvqhgd", ds.astype(k_blk.dtype), k_blk,
                                         preferred_element_type=jnp.float32) * scale
            dk_blk = jnp.einsum("bvhgqk,bvqhgd->bvkhd", ds.astype(q_blk.dtype), q_blk,
                                preferred_element_type=jnp.float32) * scale
            dk = dk.at[:, kb].add(dk_blk)
            dv = dv.at[:, kb].add(dv_blk)
            dq = dq.at[:, jnp.where(last, qb, nq)].set(dq_acc)
            return (dq_acc, dq, dk, dv), None

        zeros = (jnp.zeros((batch, lanes, bq, kv, g, d), jnp.float32),
                 jnp.zeros((batch, nq + 1, bq, kv, g, d), jnp.float32),
                 jnp.zeros(kp.shape, jnp.float32), jnp.zeros(vp.shape, jnp.float32))
        (_, dq, dk, dv), _ = jax.lax.scan(step, zeros, tuple(map(jnp.asarray, xs_np)))
        dq = dq[:, :nq].reshape(q.shape).astype(q.dtype)
        return dq, dk.reshape(k.shape).astype(k.dtype), dv.reshape(v.shape).astype(v.dtype)

    def attend_bwd(residuals, cotangents):
        return (*backward(*residuals, *cotangents), None, None, None, None)

    attend.defvjp(attend_fwd, attend_bwd)
    return Kernel(attend, forward, backward)


# --- parts, padding and merging ---


def merge(out_a, lse_a, out_b, lse_b):
    """Combine two attentions over disjoint key sets of the same queries: out [b, t, h, d],
    lse [b, t, h] (NEG where a query saw no key)."""
    lse = jnp.logaddexp(lse_a, lse_b)
    wa, wb = jnp.exp(lse_a - lse)[..., None], jnp.exp(lse_b - lse)[..., None]
    return (out_a.astype(jnp.float32) * wa + out_b.astype(jnp.float32) * wb).astype(out_a.dtype), lse


def run_part(planned: PlannedPart, q, k, v, q_segment_ids, k_segment_ids, *, scale: float,
             alibi_slopes=None, causal: bool = True, q_index=None, k_index=None):
    """One part over its queries (all, or `planned.q_tokens`): (out, lse) for the part's queries,
    in the part's query order. `q_index`/`k_index` ([time] int) replace the token indices the
    mask reads (ring attention passes each device's true positions in the sequence)."""
    s = planned.schedule
    q_tok, k_tok = planned.q_tokens, planned.k_tokens
    reorder_q = not _is_identity(q_tok, planned.q_count, q.shape[1])
    reorder_k = not _is_identity(k_tok, planned.k_count, k.shape[1])
    has_segments = k_segment_ids is not None or planned.k_count != len(k_tok)
    batch = q.shape[0]
    if has_segments:
        if k_segment_ids is None:
            k_segment_ids = jnp.ones(k.shape[:2], jnp.int32)
        if q_segment_ids is None:  # padding only: every real query is in segment of its keys
            q_segment_ids = jnp.ones(q.shape[:2], jnp.int32)
            k_segment_ids = (k_segment_ids != 0).astype(jnp.int32)

    def take(x, tokens, count, reorder, block, fill=0):
        if x is None:
            return None
        if reorder:
            x = jnp.take(x, jnp.asarray(tokens[:count]), axis=1)
        pad = -x.shape[1] % block
        if pad:
            x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
        return x

    qp = take(q, q_tok, planned.q_count, reorder_q, s.block_q)
    kp = take(k, k_tok, planned.k_count, reorder_k, s.block_k)
    vp = take(v, k_tok, planned.k_count, reorder_k, s.block_k)
    qs = take(q_segment_ids, q_tok, planned.q_count, reorder_q, s.block_q, fill=-1)
    ks = take(k_segment_ids, k_tok, planned.k_count, reorder_k, s.block_k, fill=0)
    q_idx = jnp.asarray(q_tok) if q_index is None else take(q_index[None], q_tok, planned.q_count, reorder_q, s.block_q)[0]
    k_idx = jnp.asarray(k_tok) if k_index is None else take(k_index[None], k_tok, planned.k_count, reorder_k, s.block_k)[0]
    slopes = None if alibi_slopes is None else tuple(float(x) for x in np.asarray(alibi_slopes))
    attend = kernel(s, planned.part.allowed, float(scale), slopes, causal, has_segments).attend
    dummy = jnp.zeros((batch, 1), jnp.int32)
    out, lse = attend(qp, kp, vp, q_idx.astype(jnp.int32), k_idx.astype(jnp.int32),
                      qs if has_segments else dummy, ks if has_segments else dummy)
    return out[:, :planned.q_count], lse[:, :planned.q_count]


def _is_identity(tokens: np.ndarray, count: int, length: int) -> bool:
    return count == length and bool(np.array_equal(tokens[:count], np.arange(length)))


def chunked_attention(q, k, v, q_segment_ids=None, k_segment_ids=None, *, scale: float,
                      causal: bool = True, pattern: SparsePattern | None = None,
                      alibi_slopes=None, block: int = DEFAULT_BLOCK, return_lse: bool = False):
    """Attention over the live blocks of (causal or full) & pattern & segments, in O(time) memory.

    q [batch, q_time, heads, head_dim]; k, v [batch, k_time, kv_heads, head_dim]; segment ids
    [batch, time] (0 = padding; None: one document, no padding). A query that sees no key gets
    zeros. alibi_slopes: [heads] for ALiBi's -slope * distance bias. Returns out like q (and the
    log-sum-exp [batch, q_time, heads], NEG for such queries, with `return_lse`)."""
    parts = plan(pattern, causal, q.shape[1], k.shape[1], block)
    batch, q_time, heads, _ = q.shape
    out = lse = None
    for planned in parts:
        part_out, part_lse = run_part(planned, q, k, v, q_segment_ids, k_segment_ids, scale=scale,
                                      alibi_slopes=alibi_slopes, causal=causal)
        if not _is_identity(planned.q_tokens, planned.q_count, q_time):
            rows = jnp.asarray(planned.q_tokens[:planned.q_count])
            part_out = jnp.zeros(q.shape, q.dtype).at[:, rows].set(part_out)
            part_lse = jnp.full(lse.shape, NEG, jnp.float32).at[:, rows].set(part_lse)
        out, lse = (part_out, part_lse) if out is None else merge(out, lse, part_out, part_lse)
    if out is None:  # nothing is allowed anywhere
        out, lse = jnp.zeros(q.shape, q.dtype), jnp.full((batch, q_time, heads), NEG, jnp.float32)
    return (out, lse) if return_lse else out


def live_fraction(pattern: SparsePattern | None, causal: bool, length: int,
                  block: int = DEFAULT_BLOCK) -> float:
    """Live (query block, key block) pairs over all of a dense [length, length] grid: what the
    block-sparse computation costs relative to dense attention."""
    parts = plan(pattern, causal, length, length, block)
    blocks = math.ceil(length / block) ** 2
    return sum(p.schedule.live_pairs * p.schedule.block_q * p.schedule.block_k for p in parts) / (
        blocks * block * block)
