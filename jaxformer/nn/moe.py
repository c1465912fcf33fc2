"""Mixture of experts: a feed-forward sublayer whose tokens each go to k of E expert networks.

    router:  logits = x W_r (float32), probs = softmax(logits)
    top-k:   "softmax_topk" (Switch, GShard): the k largest probabilities, as they are;
             "topk_softmax" (Mixtral): softmax over the k largest logits (HF: top-k of the
             probabilities renormalised to sum to 1, the same numbers).
    experts: y = sum over the chosen experts e of weight_e * FFN_e(x)

Two ways to send tokens to experts (`dispatch`):
- "capacity" (Switch Transformer, Fedus et al. 2021; GShard): each expert takes at most
  C = max(1, ceil(k * T * capacity_factor / E)) assignments of each group: a row of the batch,
  T its positions (padding included); under a mesh `context` axis, each device's piece of the
  row, so which tokens drop differs from one device (moe_parallel.py). First choices are served
  before second choices, earlier tokens before later ones. Assignments past capacity are
  dropped: the sublayer adds nothing for them and the residual carries the token through.
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

The steps on one device are in moe_dispatch.py; under a mesh with an `expert` axis the experts
are split across devices (moe_parallel.py).
"""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn import moe_parallel
from jaxformer.nn.feedforward import ACTIVATIONS, GATED
from jaxformer.nn.linear import Linear
from jaxformer.nn.moe_dispatch import apply_experts
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
        """Slots per expert for a group of `group` positions (padding included):
        max(1, ceil(k * group * factor / E)). The factor is taken as the decimal it is written
        as: in floats 2 * 100 * 1.1 / 4 is 55.00000000000001, whose ceiling is one slot too many."""
        factor = self.capacity_factor if training else self.eval_capacity_factor
        factor = Fraction(repr(float(factor)))  # 1.1 -> 11/10 exactly
        return max(1, math.ceil(factor * self.top_k * group / self.num_experts))

    def __call__(self, x: jax.Array, token_mask: jax.Array | None = None, *,
                 training: bool = False) -> tuple[jax.Array, dict, dict]:
        """x [batch, time, embed]; token_mask [batch, time] (False: padding). Returns (y, aux
        losses, statistics)."""
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


def split_stats(aux: dict, num_moe_layers: int) -> tuple[dict, dict]:
    """A model's summed sublayer outputs -> (losses, statistics averaged over MoE layers)."""
    losses = {k: v for k, v in aux.items() if not k.startswith(STATS_PREFIX)}
    stats = {k: v / max(num_moe_layers, 1) for k, v in aux.items() if k.startswith(STATS_PREFIX)}
    return losses, stats
