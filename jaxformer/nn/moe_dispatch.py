"""How an MoE layer's tokens reach its experts on one device: routing, capacity buffers or a
sorted grouped matmul, and the way back (see moe.py for the method). `moe` is the `MoE` sublayer
(its sizes and choices); `w` its weights as a dict. The expert-parallel path (moe_parallel.py)
runs these same steps inside a `shard_map`, with collectives between them."""

import jax
import jax.numpy as jnp

from jaxformer.nn.feedforward import ACTIVATIONS


def route(moe, router_kernel, x, token_mask):
    """(experts [b, t, k] int32, weights [b, t, k] float32, sums): the top-k choice of each token
    and the router's token sums (probabilities, assignments, z) over real tokens."""
    logits = jnp.einsum("btd,de->bte", x.astype(moe.dtype), router_kernel.astype(moe.dtype),
                        preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    if moe.router_kind == "softmax_topk":
        weights, experts = jax.lax.top_k(probs, moe.top_k)
    else:
        top_logits, experts = jax.lax.top_k(logits, moe.top_k)
        weights = jax.nn.softmax(top_logits, axis=-1)
    real = token_mask.astype(jnp.float32)
    chosen = jax.nn.one_hot(experts, moe.num_experts, dtype=jnp.float32).sum(axis=2)  # [b, t, E]
    sums = {"tokens": real.sum(),
            "routed": jnp.einsum("bte,bt->e", chosen, real),
            "probs": jnp.einsum("bte,bt->e", probs, real),
            "z": jnp.sum(jax.nn.logsumexp(logits, axis=-1) ** 2 * real)}
    return experts.astype(jnp.int32), weights, sums


def expert_ffn(moe, w: dict, h_in, matmul):
    """The experts' FFN on grouped inputs; `matmul(x, kernel)` says how inputs meet kernels
    (one expert's rows through plain matmuls, or a ragged_dot over sorted rows)."""
    act = ACTIVATIONS[moe.activation]
    dt = moe.dtype
    up = matmul(h_in, w["up"].astype(dt))
    h = act(matmul(h_in, w["gate"].astype(dt))) * up if moe.gated else act(up)
    return matmul(h, w["down"].astype(dt))


def capacity_positions(moe, experts, token_mask, capacity: int):
    """Slot of each assignment in its expert's buffer, and whether it fits: [b, t, k] each.
    Priority within a row: all first choices in token order, then all second choices, ..."""
    b, t, k = experts.shape
    onehot = jax.nn.one_hot(experts, moe.num_experts, dtype=jnp.int32) * token_mask[..., None, None]
    by_choice = jnp.swapaxes(onehot, 1, 2).reshape(b, k * t, moe.num_experts)  # choice-major
    position = jnp.cumsum(by_choice, axis=1) - 1
    position = jnp.swapaxes(position.reshape(b, k, t, moe.num_experts), 1, 2)
    slot = jnp.sum(position * jax.nn.one_hot(experts, moe.num_experts, dtype=jnp.int32), -1)
    keep = (slot < capacity) & token_mask[..., None]
    return slot, keep


def dispatch_capacity(moe, x, experts, keep, slot, capacity: int):
    """Tokens into per-expert buffers [E, b, C, d], expert-major so that each expert's tokens are
    one contiguous [b * C, d] matrix (capacity_experts). Dropped assignments point one past the
    last slot, and the scatter drops out-of-range writes. A scatter-add, not a set: the kept
    slots are distinct, so it is the same buffer, and its gradient is one gather (a set's JVP
    scatters token ids as well to find which write wins)."""
    b, t, k = experts.shape
    slot = jnp.where(keep, slot, capacity)
    rows = jnp.broadcast_to(jnp.arange(b)[:, None, None], experts.shape)
    buffer = jnp.zeros((moe.num_experts, b, capacity, x.shape[-1]), x.dtype)
    tokens = jnp.broadcast_to(x[:, :, None, :], (b, t, k, x.shape[-1]))
    return buffer.at[experts, rows, slot].add(tokens, mode="drop")


def capacity_experts(moe, w: dict, buffer):
    """The experts' FFN on buffers [E_w, b, C, d] (E_w = w["up"].shape[0]): each expert's rows
    as one matrix through plain 2-D matmuls. On CPU this is faster, forward and backward, than
    one batched einsum over [E, b, C, d], which XLA runs as Eigen batched dots with transposing
    copies around them (README, mixture of experts: the profile)."""
    e, b, c, d = buffer.shape
    # jnp.split, not indexing: the derivative of E slices is E zero-padded copies of the whole
    # array added up, the derivative of a split one concatenation.
    unstack = lambda a: [part[0] for part in jnp.split(a, e)]  # noqa: E731
    rows = unstack(buffer.reshape(e, b * c, d))
    kernels = {name: unstack(kernel) for name, kernel in w.items() if name != "router"}
    dot = lambda h, kernel: jnp.dot(  # noqa: E731
        h, kernel, preferred_element_type=jnp.float32).astype(moe.dtype)
    out = [expert_ffn(moe, {name: kernel[i] for name, kernel in kernels.items()}, rows[i], dot)
           for i in range(e)]
    return jnp.stack(out).reshape(e, b, c, -1)


def combine_capacity(y_buffer, experts, keep, slot, weights):
    """Expert outputs [E, b, C, d] back to tokens, weighted; dropped assignments add nothing.
    The weighted sum over the k choices is written out elementwise: as an einsum its gradient
    transposes the gathered [b, t, k, d] outputs."""
    b, _, k = experts.shape
    rows = jnp.broadcast_to(jnp.arange(b)[:, None, None], experts.shape)
    picked = y_buffer[experts, rows, jnp.where(keep, slot, 0)]  # [b, t, k, d]
    w = jnp.where(keep, weights, 0.0).astype(picked.dtype)
    return sum(picked[:, :, i] * w[:, :, i, None] for i in range(k))


def dropless_experts(moe, w: dict, x_rows, experts, weights, valid, first_expert: int = 0):
    """Dropless: rows [n, d] with experts/weights [n, k]; `valid` [n] False for padding rows.
    Only experts first_expert .. first_expert + E_w - 1 (E_w = w["up"].shape[0]) are computed
    (expert parallelism gives each device its own); other assignments contribute nothing."""
    n, k = experts.shape
    local = w["up"].shape[0]
    e = experts.reshape(-1) - first_expert
    mine = (e >= 0) & (e < local) & jnp.repeat(valid, k)
    e = jnp.where(mine, e, local)  # others sort last, past every group
    order = jnp.argsort(e, stable=True)
    sizes = jnp.bincount(e, length=local + 1)[:local].astype(jnp.int32)
    rows = jnp.take(x_rows.astype(moe.dtype), order // k, axis=0)
    out = expert_ffn(moe, w, rows, lambda h, kernel: jax.lax.ragged_dot(h, kernel, sizes))
    out = jnp.zeros_like(out).at[order].set(out).reshape(n, k, -1)
    wt = jnp.where(mine.reshape(n, k), weights, 0.0).astype(out.dtype)
    return jnp.einsum("nkd,nk->nd", out, wt)


def apply_experts(moe, w: dict, x, token_mask, *, training: bool):
    """The whole sublayer on one device's tokens: (y [b, t, d], token sums)."""
    experts, weights, sums = route(moe, w["router"], x, token_mask)
    b, t, d = x.shape
    if moe.dispatch == "dropless":
        y = dropless_experts(moe, w, x.reshape(b * t, d), experts.reshape(b * t, -1),
                             weights.reshape(b * t, -1), token_mask.reshape(-1)).reshape(b, t, d)
        sums["dropped"] = jnp.float32(0.0)
        return y, sums
    capacity = moe.capacity(t, training)
    slot, keep = capacity_positions(moe, experts, token_mask, capacity)
    buffer = dispatch_capacity(moe, x.astype(moe.dtype), experts, keep, slot, capacity)
    y_buffer = capacity_experts(moe, w, buffer)
    sums["dropped"] = jnp.sum((~keep) & token_mask[..., None]).astype(jnp.float32)
    return combine_capacity(y_buffer, experts, keep, slot, weights), sums
