"""Expert parallelism: the experts of an MoE layer split over the mesh axis `expert`.

Inside `jax.shard_map` over the whole mesh, each device routes its own tokens (the batch is split
over data, fsdp and expert; the sequence over context), then:

- capacity dispatch: per-expert buffers [E, rows, C, d] go to the devices that own the experts
  with one `all_to_all` over `expert`, come back with another (GShard's dispatch);
- dropless dispatch: the tokens of the devices along `expert` are gathered (`all_gather`), each
  device runs its own experts on the assignments that chose them (one grouped matmul), and the
  partial outputs are summed back onto the tokens' owners (`psum_scatter`).

It composes with the other axes: expert weights stay split over `tensor` on their `mlp` axis
(each device computes part of every hidden unit sum and a `psum` over `tensor` completes it) and
are gathered over the axes their `embed` axis is split on (fsdp), as FSDP does for any weight.
The router's token sums are added over every axis that splits the tokens before the losses are
formed, so losses equal the single-device ones.

Capacity is not shared across the `context` axis: each device's piece of a row (T / context
positions) is a capacity group of its own, with C = ceil(k * (T / context) * factor / E) slots and
its own order of service, so which tokens drop differs from one device. Shared slots would need
every piece's counts and buffers on every device (GShard's groups are local in the same way).
"""

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec

from jaxformer.nn import moe_dispatch
from jaxformer.nn.sharding import logical_to_spec

EXPERT_AXIS = "expert"


def expert_parallelism() -> int:
    """Size of the `expert` axis of the mesh in force (1 when there is none)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or EXPERT_AXIS not in mesh.axis_names:
        return 1
    return int(mesh.shape[EXPERT_AXIS])


def _axes(entry) -> tuple[str, ...]:
    return (entry,) if isinstance(entry, str) else tuple(entry or ())


def expert_parallel(moe, x, token_mask, *, training: bool):
    """(y, global token sums) with the experts split over the `expert` mesh axis."""
    mesh = jax.sharding.get_abstract_mesh()
    sizes = dict(mesh.shape)
    rules = nn.get_logical_axis_rules() or ()
    ep = sizes[EXPERT_AXIS]
    if moe.num_experts % ep:
        raise ValueError(f"{moe.num_experts} experts cannot be split over mesh.expert={ep}: "
                         f"choose an expert axis size that divides the number of experts")
    w = moe.weights()
    names = {"router": ("embed", None), "up": ("expert", "embed", "mlp"),
             "gate": ("expert", "embed", "mlp"), "down": ("expert", "mlp", "embed")}
    w_specs = {k: logical_to_spec(names[k], v.shape, rules, sizes) for k, v in w.items()}
    if _axes(w_specs["up"][0]) != (EXPERT_AXIS,):
        raise ValueError(f"expert parallelism needs the expert weights split over the {EXPERT_AXIS!r} "
                         f"mesh axis on their expert dimension (mesh.rules.expert), got "
                         f"{w_specs['up']}")
    x_spec = logical_to_spec(("batch", "length", None), x.shape, rules, sizes)
    x_spec = PartitionSpec(x_spec[0], x_spec[1], None)
    mask_spec = PartitionSpec(x_spec[0], x_spec[1])
    token_axes = _axes(x_spec[0]) + _axes(x_spec[1])  # axes that split the tokens
    tensor_axes = _axes(w_specs["up"][2])  # axes that split the hidden units
    gather_axes = {k: [(dim, _axes(s[dim])) for dim in range(len(s))
                       if _axes(s[dim]) and _axes(s[dim]) != (EXPERT_AXIS,)
                       and not (k != "router" and dim == (2 if k != "down" else 1))]
                   for k, s in w_specs.items()}

    def body(x, token_mask, w):
        # Whole weights but for the expert and hidden dimensions (FSDP's gather).
        for k, dims in gather_axes.items():
            for dim, axes in dims:
                w[k] = jax.lax.all_gather(w[k], axes, axis=dim, tiled=True)
        experts, weights, sums = moe_dispatch.route(moe, w["router"], x, token_mask)
        if moe.dispatch == "dropless":
            y, dropped = _dropless(moe, w, x, token_mask, experts, weights, ep)
        else:
            y, dropped = _capacity(moe, w, x, token_mask, experts, weights, training)
        if tensor_axes:
            y = jax.lax.psum(y, tensor_axes)
        sums["dropped"] = dropped
        if token_axes:
            sums = jax.lax.psum(sums, token_axes)
        return y, sums

    sums_spec = {name: PartitionSpec() for name in ("tokens", "routed", "probs", "z", "dropped")}
    return jax.shard_map(body, mesh=mesh, in_specs=(x_spec, mask_spec, w_specs),
                         out_specs=(x_spec, sums_spec), check_vma=False)(x, token_mask, w)


def _capacity(moe, w, x, token_mask, experts, weights, training):
    """GShard dispatch: buffers to the experts' devices and back, one all-to-all each way."""
    capacity = moe.capacity(x.shape[1], training)
    slot, keep = moe_dispatch.capacity_positions(moe, experts, token_mask, capacity)
    buffer = moe_dispatch.dispatch_capacity(moe, x.astype(moe.dtype), experts, keep, slot, capacity)
    # [E, rows, C, d] -> [E / ep, ep * rows, C, d]: every device's tokens for my experts
    buffer = jax.lax.all_to_all(buffer, EXPERT_AXIS, split_axis=0, concat_axis=1, tiled=True)
    y_buffer = moe_dispatch.capacity_experts(moe, w, buffer)
    y_buffer = jax.lax.all_to_all(y_buffer, EXPERT_AXIS, split_axis=1, concat_axis=0, tiled=True)
    dropped = jnp.sum((~keep) & token_mask[..., None]).astype(jnp.float32)
    return moe_dispatch.combine_capacity(y_buffer, experts, keep, slot, weights), dropped


def _dropless(moe, w, x, token_mask, experts, weights, ep):
    """Gather the expert group's tokens, run my experts on them, sum the outputs back."""
    b, t, d = x.shape
    gather = lambda a: jax.lax.all_gather(a, EXPERT_AXIS, axis=0, tiled=True)  # noqa: E731
    xs, es, ws, ms = gather(x), gather(experts), gather(weights), gather(token_mask)
    local = moe.num_experts // ep
    first = jax.lax.axis_index(EXPERT_AXIS) * local
    y = moe_dispatch.dropless_experts(moe, w, xs.reshape(ep * b * t, d), es.reshape(ep * b * t, -1),
                                 ws.reshape(ep * b * t, -1), ms.reshape(-1), first_expert=first)
    y = jax.lax.psum_scatter(y.reshape(ep * b, t, d), EXPERT_AXIS, scatter_dimension=0, tiled=True)
    return y, jnp.float32(0.0)
