"""Mixture of experts: a feed-forward sublayer whose tokens each go to k of E expert networks.

    router:  logits = x W_r (float32), probs = softmax(logits)
    top-k:   "softmax_topk" (Switch, GShard): the k largest probabilities, as they are;
             "topk_softmax" (Mixtral): softmax over the k largest logits (HF: top-k of the
             probabilities renormalised to sum to 1, the same numbers).
    experts: y = sum over the chosen experts e of weight_e * FFN_e(x)

Two ways to send tokens to experts (`dispatch`):
- "capacity" (Switch Transformer, Fedus et al. 2021; GShard): each expert takes at most
  C = ceil(k * tokens * capacity_factor / E) tokens of each group (a row of the batch); first
  choices are served before second choices, earlier tokens before later ones. Tokens past
  capacity are dropped: the sublayer adds nothing for them and the residual carries them through.
  capacity_factor applies while training (a dropout key in the context), eval_capacity_factor
  otherwise (Switch: 1.25 and 2.0). Each expert runs on its [rows * C, d] buffer as plain matmuls.
- "dropless" (MegaBlocks, Gale et al. 2022; Mixtral): tokens sorted by expert and one grouped
  matmul (`jax.lax.ragged_dot`) per projection; no token is dropped.

Auxiliary losses (in `ModelOutput.aux`, summed over layers, already weighted):
- load balancing (Switch eq. 4-6): aux_loss_coef * E * sum_i f_i * P_i, f_i the fraction of
  tokens routed to expert i among their top-k (as HF's `load_balancing_loss_func`; for top-1 the
  Switch definition), P_i the mean router probability of expert i;
- router z-loss (ST-MoE, Zoph et al. 2022): z_loss_coef * mean(logsumexp(logits)^2).
Padding tokens (segment 0) are left out of routing, capacity and both losses.

Router statistics go into `ModelOutput.stats` (logged each step, not trained on): the share of
routed tokens each expert received (`moe/load_expert_<i>`) and the share of assignments dropped
for lack of capacity (`moe/dropped_fraction`), averaged over the layers.

Under a mesh with an `expert` axis the experts are split across devices (moe_parallel.py).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.feedforward import ACTIVATIONS, GATED
from jaxformer.nn.linear import Linear
from jaxformer.nn.params import Initializer, normal, param

ROUTERS = ("softmax_topk", "topk_softmax")
DISPATCHES = ("capacity", "dropless")
STATS_PREFIX = "moe/"


class MoE(nnx.Module):
    """E experts of width `hidden_dim` with `activation` (gated ones: three matrices each).
    Parameters: router kernel [embed, E]; up (and gate) [E, embed, mlp]; down [E, mlp, embed],
    the expert axis named "expert"."""

    def __init__(self, d_model: int, hidden_dim: int, num_experts: int, *, top_k: int = 2,
                 activation: str = "swiglu", router: str = "topk_softmax",
                 dispatch: str = "dropless", capacity_factor: float = 1.25,
                 eval_capacity_factor: float = 2.0, aux_loss_coef: float = 0.01,
                 z_loss_coef: float = 0.001, init: Initializer | None = None,
                 out_init: Initializer | None = None, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS and activation not in GATED:
            raise ValueError(f"unknown activation {activation!r}: use one of "
                             f"{sorted(ACTIVATIONS) + sorted(GATED)}")
        if router not in ROUTERS:
            raise ValueError(f"unknown router {router!r}: use one of {list(ROUTERS)}")
        if dispatch not in DISPATCHES:
            raise ValueError(f"unknown dispatch {dispatch!r}: use one of {list(DISPATCHES)}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and num_experts={num_experts}")
        self.num_experts, self.top_k, self.router_kind, self.dispatch = num_experts, top_k, router, dispatch
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        self.aux_loss_coef, self.z_loss_coef = aux_loss_coef, z_loss_coef
        self.gated = activation in GATED
        self.activation = GATED.get(activation, activation)
        self.dtype = dtype
        init = init or normal(0.02)
        self.router = Linear(d_model, num_experts, in_axes=("embed",), out_axes=(None,),
                             use_bias=False, init=init, dtype=dtype, param_dtype=param_dtype,
                             out_dtype=jnp.float32, rngs=rngs)
        shape_in, shape_out = (num_experts, d_model, hidden_dim), (num_experts, hidden_dim, d_model)
        axes_in, axes_out = ("expert", "embed", "mlp"), ("expert", "mlp", "embed")
        self.up = param(rngs.params(), init, shape_in, axes_in, param_dtype)
        self.gate = param(rngs.params(), init, shape_in, axes_in, param_dtype) if self.gated else None
        self.down = param(rngs.params(), out_init or init, shape_out, axes_out, param_dtype)

    def weights(self) -> dict:
        w = {"router": self.router.kernel[...], "up": self.up[...], "down": self.down[...]}
        if self.gate is not None:
            w["gate"] = self.gate[...]
        return w

    def capacity(self, group: int, training: bool) -> int:
        factor = self.capacity_factor if training else self.eval_capacity_factor
        return max(1, math.ceil(self.top_k * group * factor / self.num_experts))

    def __call__(self, x: jax.Array, token_mask: jax.Array | None = None, *,
                 training: bool = False) -> tuple[jax.Array, dict, dict]:
        """x [batch, time, embed]; token_mask [batch, time] (False: padding). Returns (y, aux
        losses, statistics)."""
        from jaxformer.nn import moe_parallel  # the expert-parallel path (shard_map)

        if token_mask is None:
            token_mask = jnp.ones(x.shape[:2], bool)
        if moe_parallel.expert_parallelism() > 1:
            y, sums = moe_parallel.expert_parallel(self, x, token_mask, training=training)
        else:
            y, sums = apply_experts(self, self.weights(), x, token_mask, training=training)
        return y.astype(x.dtype), *self.losses_and_stats(sums)

    def as_sublayer(self, x: jax.Array, ctx, cache):
        """The block's call: (output, cache untouched, aux losses and statistics). Training is
        signalled by a dropout key in the context, as for dropout."""
        mask = None if ctx.segment_ids is None else ctx.segment_ids != 0
        y, aux, stats = self(x, mask, training=ctx.dropout_rng is not None)
        return y, cache, {**aux, **stats}

    def losses_and_stats(self, sums: dict) -> tuple[dict, dict]:
        """From token sums (global: summed over devices) to losses and statistics."""
        n = jnp.maximum(sums["tokens"], 1.0)
        f, p = sums["routed"] / n, sums["probs"] / n  # f sums to k, p to 1
        aux = {"load_balancing_loss": self.aux_loss_coef * self.num_experts * jnp.sum(f * p),
               "router_z_loss": self.z_loss_coef * sums["z"] / n}
        load = sums["routed"] / jnp.maximum(jnp.sum(sums["routed"]), 1.0)
        stats = {f"{STATS_PREFIX}load_expert_{i}": load[i] for i in range(self.num_experts)}
        stats[f"{STATS_PREFIX}dropped_fraction"] = sums["dropped"] / (n * self.top_k)
        return aux, stats


def route(moe: MoE, router_kernel, x, token_mask):
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


def expert_ffn(moe: MoE, w: dict, h_in, matmul):
    """The experts' FFN on grouped inputs; `matmul(x, kernel)` says how inputs meet kernels
    (one expert's rows through plain matmuls, or a ragged_dot over sorted rows)."""
    act = ACTIVATIONS[moe.activation]
    dt = moe.dtype
    up = matmul(h_in, w["up"].astype(dt))
    h = act(matmul(h_in, w["gate"].astype(dt))) * up if moe.gated else act(up)
    return matmul(h, w["down"].astype(dt))


def capacity_positions(moe: MoE, experts, token_mask, capacity: int):
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


def dispatch_capacity(moe: MoE, x, experts, keep, slot, capacity: int):
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


def capacity_experts(moe: MoE, w: dict, buffer):
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


def dropless_experts(moe: MoE, w: dict, x_rows, experts, weights, valid, first_expert: int = 0):
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


def apply_experts(moe: MoE, w: dict, x, token_mask, *, training: bool):
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


def split_stats(aux: dict, num_moe_layers: int) -> tuple[dict, dict]:
    """A model's summed sublayer outputs -> (losses, statistics averaged over MoE layers)."""
    losses = {k: v for k, v in aux.items() if not k.startswith(STATS_PREFIX)}
    stats = {k: v / max(num_moe_layers, 1) for k, v in aux.items() if k.startswith(STATS_PREFIX)}
    return losses, stats
