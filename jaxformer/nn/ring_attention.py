"""Ring attention (context parallelism): the sequence split over the mesh axis `context`.

Each of the n devices holds T/n queries, keys and values. Key/value blocks travel round the ring
(`jax.lax.ppermute` inside `jax.shard_map`) for n steps; each device attends its queries to the
block it holds at each step and merges the partial results by their log-sum-exp (online softmax
across devices, Liu et al. 2023, "Ring Attention with Blockwise Transformers"). Within a step the
work is `chunked_attention`'s kernel, so no device ever holds a [T/n, T/n] score matrix either.

Causal load balancing (zig-zag, as in Llama 3's context parallelism and ring-flash-attention): the
sequence is cut into 2n chunks and device r holds chunks r and 2n-1-r. At every step after the
first, each device then has exactly half a block of work: all its queries against the first half
of a block from an earlier device, or the second half of its queries against a whole block from a
later one. With contiguous chunks the last device would do n times the work of the first.

Masks are computed from the tokens' true indices, so packed segments (their ids travel with the
keys) and sliding windows combine with it freely. The backward pass is a second trip round the
ring (a custom VJP): the key/value gradients travel with their blocks and arrive home after n
steps, so memory per device stays O(T/n).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import PartitionSpec

from jaxformer.nn import chunked_attention as ca
from jaxformer.nn.sharding import logical_to_spec
from jaxformer.nn.sparse_attention import Part

CONTEXT_AXIS = "context"


def context_parallelism() -> int:
    """Size of the `context` axis of the mesh in force (1 when there is none)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or CONTEXT_AXIS not in mesh.axis_names:
        return 1
    return int(mesh.shape[CONTEXT_AXIS])


def zigzag_order(length: int, n: int) -> np.ndarray:
    """Token order that puts chunks r and 2n-1-r (of 2n) on device r."""
    chunks = np.arange(length).reshape(2 * n, length // (2 * n))
    return np.concatenate([np.concatenate([chunks[r], chunks[2 * n - 1 - r]]) for r in range(n)])


@functools.lru_cache(maxsize=32)
def _rule(causal: bool, window: int | None):
    def allowed(i, j):
        ok = (i >= j) if causal else (i == i) & (j == j)
        if window is not None:
            ok = ok & (abs(i - j) < window)
        return ok
    return allowed


def _block(n: int) -> int:
    return next(b for b in (128, 64, 32, 16, 8) if n % b == 0)


@functools.lru_cache(maxsize=32)
def _kernels(local: int, causal: bool, window: int | None, scale: float, has_segments: bool):
    """The four shapes of work a ring step does (static schedules over local positions)."""
    half = local // 2
    rule = _rule(causal, window)
    make = lambda live, bq, bk: ca.kernel(  # noqa: E731
        ca.schedule_from_liveness(live, bq, bk), rule, scale, None, causal, has_segments)
    bl, bh = _block(local), _block(half)
    nl, nh = local // bl, half // bh
    # Device-local positions increase with the true index (zig-zag keeps each device's chunks in
    # order), so a causal mask over positions rules out the same blocks as over indices.
    diag = np.tril(np.ones((nl, nl), bool)) if causal else np.ones((nl, nl), bool)
    return {
        "diag": make(diag, bl, bl),
        "full": make(np.ones((nl, nl), bool), bl, bl),
        "kv_half": make(np.ones((nl, nh), bool), bl, bh),
        "q_half": make(np.ones((nh, nl), bool), bh, bl),
    }


def _plan(n: int, causal: bool, balanced: bool):
    """For each step s and device r, which work to do: an index into BRANCHES."""
    table = np.zeros((n, n), np.int32)
    for s in range(n):
        for r in range(n):
            src = (r - s) % n
            if not causal:
                kind = "full"
            elif s == 0:
                kind = "diag"
            elif balanced:
                kind = "kv_half" if src < r else "q_half"
            else:
                kind = "full" if src < r else "none"
            table[s, r] = BRANCHES.index(kind)
    return table


BRANCHES = ("diag", "full", "kv_half", "q_half", "none")


def _forward_branch(kind, kernels, q, k, v, qi, ki, qs, ks):
    """(out f32, lse) over all local queries for one step."""
    batch, local, heads, d = q.shape
    half = local // 2
    if kind == "none":
        return jnp.zeros(q.shape, jnp.float32), jnp.full((batch, local, heads), ca.NEG, jnp.float32)
    if kind == "kv_half":
        out, lse = kernels["kv_half"].forward(q, k[:, :half], v[:, :half], qi, ki[:half], qs, ks[:, :half])
    elif kind == "q_half":
        out, lse = kernels["q_half"].forward(q[:, half:], k, v, qi[half:], ki, qs[:, half:], ks)
        out = jnp.concatenate([jnp.zeros_like(out), out], axis=1)
        lse = jnp.concatenate([jnp.full_like(lse, ca.NEG), lse], axis=1)
    else:
        out, lse = kernels[kind].forward(q, k, v, qi, ki, qs, ks)
    return out.astype(jnp.float32), lse


def _backward_branch(kind, kernels, q, k, v, qi, ki, qs, ks, out, lse, d_out):
    """(dq, dk, dv) in float32 of one step, given the ring's final out and lse."""
    half = q.shape[1] // 2
    zeros = lambda x: jnp.zeros(x.shape, jnp.float32)  # noqa: E731
    if kind == "none":
        return zeros(q), zeros(k), zeros(v)
    d_lse = jnp.zeros(lse.shape, jnp.float32)
    if kind == "kv_half":
        dq, dk, dv = kernels["kv_half"].backward(q, k[:, :half], v[:, :half], qi, ki[:half], qs,
                                                 ks[:, :half], out, lse, d_out, d_lse)
        pad = lambda x: jnp.concatenate([x, jnp.zeros_like(x)], axis=1)  # noqa: E731
        return dq.astype(jnp.float32), pad(dk.astype(jnp.float32)), pad(dv.astype(jnp.float32))
    if kind == "q_half":
        dq, dk, dv = kernels["q_half"].backward(q[:, half:], k, v, qi[half:], ki, qs[:, half:], ks,
                                                out[:, half:], lse[:, half:], d_out[:, half:],
                                                d_lse[:, half:])
        dq = jnp.concatenate([jnp.zeros_like(dq), dq], axis=1)
        return dq.astype(jnp.float32), dk.astype(jnp.float32), dv.astype(jnp.float32)
    dq, dk, dv = kernels[kind].backward(q, k, v, qi, ki, qs, ks, out, lse, d_out, d_lse)
    return dq.astype(jnp.float32), dk.astype(jnp.float32), dv.astype(jnp.float32)


def _ring_fn(n: int, causal: bool, window: int | None, scale: float, balanced: bool,
             has_segments: bool, local: int):
    """Per-device ring attention (q, k, v, token indices, segment ids) -> out, with its VJP."""
    kernels = _kernels(local, causal, window, scale, has_segments)
    plan = _plan(n, causal, balanced)
    shift = [(i, (i + 1) % n) for i in range(n)]
    rotate = lambda xs: jax.lax.ppermute(xs, CONTEXT_AXIS, shift)  # noqa: E731

    fwd_branches = [functools.partial(_forward_branch, kind, kernels) for kind in BRANCHES]
    bwd_branches = [functools.partial(_backward_branch, kind, kernels) for kind in BRANCHES]

    def branch_index(s):
        return jnp.asarray(plan)[s, jax.lax.axis_index(CONTEXT_AXIS)]

    # The n steps are a scan over the first n - 1 (compute, then pass the blocks on) and a last
    # step outside it (no pass): each branch compiles twice, not n times, and no block moves
    # more than it must.
    def forward(q, k, v, idx, seg):
        def step(carry, s):
            out, lse, kv = carry
            o, l = jax.lax.switch(branch_index(s), fwd_branches, q, kv[0], kv[1], idx, kv[2], seg,
                                  kv[3])
            out, lse = ca.merge(out, lse, o, l)
            return (out, lse, kv), None

        def step_and_pass(carry, s):
            (out, lse, kv), _ = step(carry, s)
            return (out, lse, rotate(kv)), None

        carry = (jnp.zeros(q.shape, jnp.float32), jnp.full(q.shape[:3], ca.NEG, jnp.float32),
                 (k, v, idx, seg))
        carry, _ = jax.lax.scan(step_and_pass, carry, jnp.arange(n - 1))
        (out, lse, _), _ = step(carry, n - 1)
        return out, lse

    @jax.custom_vjp
    def ring(q, k, v, idx, seg):
        return forward(q, k, v, idx, seg)[0].astype(q.dtype)

    def ring_fwd(q, k, v, idx, seg):
        out, lse = forward(q, k, v, idx, seg)
        return out.astype(q.dtype), (q, k, v, idx, seg, out.astype(q.dtype), lse)

    def ring_bwd(residuals, d_out):
        q, k, v, idx, seg, out, lse = residuals

        def step(carry, s):
            dq, (kc, vc, ic, sc, dk, dv) = carry
            g_q, g_k, g_v = jax.lax.switch(branch_index(s), bwd_branches, q, kc, vc, idx, ic, seg,
                                           sc, out, lse, d_out)
            return (dq + g_q, (kc, vc, ic, sc, dk + g_k, dv + g_v)), None

        def step_and_pass(carry, s):
            (dq, travelling), _ = step(carry, s)
            return (dq, rotate(travelling)), None

        travelling = (k, v, idx, seg, jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
        carry, _ = jax.lax.scan(step_and_pass, (jnp.zeros(q.shape, jnp.float32), travelling),
                                jnp.arange(n - 1))
        (dq, travelling), _ = step(carry, n - 1)
        # The key/value gradients go round with their blocks: the n-th move brings them home.
        travelling = travelling[:4] + rotate(travelling[4:])
        _, _, _, _, dk, dv = travelling
        return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None

    ring.defvjp(ring_fwd, ring_bwd)
    return ring


def ring_attention(q, k, v, segment_ids=None, *, scale: float, causal: bool = True,
                   window: int | None = None, load_balance: str = "zigzag"):
    """Self-attention with the sequence split over the mesh's `context` axis.

    q [batch, time, heads, head_dim], k/v [batch, time, kv_heads, head_dim] (global arrays; the
    mesh in force must have a `context` axis), segment_ids [batch, time] or None. `window`: a
    sliding window |i - j| < window. `load_balance`: "zigzag" (causal only) or "none"
    (contiguous chunks). time must be a multiple of 16 x the context size."""
    mesh = jax.sharding.get_abstract_mesh()
    n = int(mesh.shape[CONTEXT_AXIS])
    batch, time = q.shape[:2]
    if time % (16 * n):
        raise ValueError(f"ring attention over {n} devices needs a sequence length that is a "
                         f"multiple of {16 * n}, got {time}: pad the batch or change mesh.context")
    if load_balance not in ("zigzag", "none"):
        raise ValueError(f"load_balance must be 'zigzag' or 'none', got {load_balance!r}")
    balanced = causal and load_balance == "zigzag"
    order = zigzag_order(time, n) if balanced else np.arange(time)
    has_segments = segment_ids is not None
    seg = segment_ids.astype(jnp.int32) if has_segments else jnp.zeros((batch, time), jnp.int32)
    if balanced:
        q, k, v, seg = (jnp.take(x, jnp.asarray(order), axis=1) for x in (q, k, v, seg))
    idx = jnp.broadcast_to(jnp.asarray(order, jnp.int32), (batch, time))
    local = time // n
    ring = _ring_fn(n, causal, window, float(scale), balanced, has_segments, local)

    def per_device(q, k, v, idx, seg):
        return ring(q, k, v, idx[0], seg)

    q_spec, kv_spec, row_spec = _specs(q.shape, k.shape, dict(mesh.shape))
    out = jax.shard_map(per_device, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, row_spec, row_spec),
                        out_specs=q_spec, check_vma=False)(q, k, v, idx, seg)
    if balanced:
        out = jnp.take(out, jnp.asarray(np.argsort(order)), axis=1)
    return out


def _specs(q_shape, kv_shape, axis_sizes):
    """Batch and heads as the logical rules split them, the length over `context`."""
    rules = nn.get_logical_axis_rules() or ()
    spec = lambda shape, heads: logical_to_spec(("batch", None, heads, None), shape, rules, axis_sizes)  # noqa: E731
    q_spec, kv_spec = spec(q_shape, "heads"), spec(kv_shape, "kv_heads")
    if q_spec[2] != kv_spec[2]:  # key/value heads not split like the query heads: keep both whole
        q_spec = PartitionSpec(q_spec[0], None, None, None)
        kv_spec = PartitionSpec(kv_spec[0], None, None, None)
    batch = q_spec[0]
    return (PartitionSpec(batch, CONTEXT_AXIS, q_spec[2], None),
            PartitionSpec(batch, CONTEXT_AXIS, kv_spec[2], None),
            PartitionSpec(batch, CONTEXT_AXIS))
