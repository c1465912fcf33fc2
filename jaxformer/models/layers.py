"""A stack of identical blocks, unrolled or scanned, with optional rematerialisation.

Unrolled, the stack is an `nnx.List` of blocks and its state has one entry per layer
(`layers/0/...`, `layers/1/...`): the layout the HF importer writes. Scanned, it is one block
whose every parameter has a leading axis of size `num_layers` named "layers": XLA then compiles
one layer body however deep the model is. `stack_layers` / `unstack_layers` convert a state
between the two layouts.

Each block is called as `block(x, ctx, cache) -> (x, cache, aux)` (see `jaxformer.nn.block`):
`ctx` is the `BlockContext` shared by every layer, except its dropout key, which is per layer.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.context import BlockContext
from jaxformer.nn.platform import compute_platform
from jaxformer.nn.sharding import GATHERED_WEIGHT, constrain

REMAT_POLICIES = {
    "none": None,
    # Keep the block inputs and the weights as `gathered` laid them out for the forward pass:
    # activations are recomputed, but an FSDP weight is not gathered a second time for the
    # backward pass. Costs one layer's gathered weights per layer (GPT-2 small in bfloat16:
    # 170 MB a chip); too much where even one copy of the model does not fit a chip.
    "keep_weights": jax.checkpoint_policies.save_only_these_names(GATHERED_WEIGHT),
    # Keep the outputs of weight matmuls (no batch dimensions); recompute the cheap elementwise
    # work and the attention scores in the backward pass.
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # Keep nothing but the block inputs: the least memory, one more forward pass of compute.
    "full": jax.checkpoint_policies.nothing_saveable,
}
ACTIVATION_AXES = ("batch", "length", "embed")
AUTO_REMAT = {"cpu": "none", "gpu": "keep_weights", "tpu": "keep_weights"}


def resolve_remat(remat: str) -> str:
    """`auto`: no rematerialisation on a CPU (small models, where recomputing costs time and
    memory is plentiful); `keep_weights` on accelerators, whose memory bounds the batch (GPT-2
    small, 32 x 1024 tokens on 4 v5e chips with FSDP: 3 GiB of temporaries instead of 7.3).
    Decided by the platform of the mesh the program is compiled for."""
    return AUTO_REMAT.get(compute_platform(), "none") if remat == "auto" else remat


def stacked_blocks(make_block: Callable[[nnx.Rngs], nnx.Module], num_layers: int,
                   rngs: nnx.Rngs) -> nnx.Module:
    """One block whose parameters carry a leading [num_layers] axis, logically named "layers"."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(rngs):
        return make_block(rngs)

    return create(rngs)


def _block_fn(graphdef, remat: str, scanned: bool):
    """(block state, x, ctx, cache) -> (x, cache, aux), rematerialised as asked."""

    def apply(state, x, ctx, cache):
        x, cache, aux = nnx.merge(graphdef, state)(x, ctx, cache)
        return constrain(x, ACTIVATION_AXES), cache, aux

    remat = resolve_remat(remat)
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r} is not one of {list(REMAT_POLICIES) + ['auto']}")
    if remat == "none":
        return apply
    # Inside a scan the loop itself stops XLA from merging the recomputation with the forward
    # pass, so the CSE barrier that jax.checkpoint adds by default is only needed unrolled.
    return jax.checkpoint(apply, policy=REMAT_POLICIES[remat], prevent_cse=not scanned)


def run_layers(layers, x: jax.Array, ctx: BlockContext, cache, keys, *, scan: bool, remat: str):
    """Apply the stack to x [batch, time, embed].

    layers: an `nnx.List` of blocks (unrolled) or one stacked block (scan). cache: None, a list
    of per-layer caches (unrolled) or one cache whose arrays are stacked on a leading layer axis
    (scan). keys: None or [num_layers] dropout keys. Returns (x, cache in the same layout, aux
    losses summed over the layers).
    """
    if scan:
        graphdef, state = nnx.split(layers)
        step = _block_fn(graphdef, remat, scanned=True)

        def body(x, xs):
            layer_state, layer_cache, key = xs
            x, layer_cache, aux = step(layer_state, x, ctx.replace(dropout_rng=key), layer_cache)
            return x, (layer_cache, aux)

        x, (cache, aux) = jax.lax.scan(body, x, (state, cache, keys))
        return x, cache, jax.tree.map(lambda a: jnp.sum(a, axis=0), aux)

    new_cache = [] if cache is not None else None
    total_aux: dict = {}
    for i, layer in enumerate(layers):
        layer_cache = None if cache is None else cache[i]
        layer_ctx = ctx.replace(dropout_rng=None if keys is None else keys[i])
        if resolve_remat(remat) == "none":
            # A direct call keeps `sow`n intermediates (attention weights) on the module.
            x, layer_cache, aux = layer(x, layer_ctx, layer_cache)
            x = constrain(x, ACTIVATION_AXES)
        else:
            graphdef, state = nnx.split(layer)
            x, layer_cache, aux = _block_fn(graphdef, remat, scanned=False)(
                state, x, layer_ctx, layer_cache)
        if cache is not None:
            new_cache.append(layer_cache)
        for name, value in aux.items():
            total_aux[name] = total_aux.get(name, 0.0) + value
    return x, new_cache, total_aux


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _stack(*leaves):
    if _is_variable(leaves[0]):
        first = leaves[0]
        names = first.get_metadata().get("out_sharding")
        value = jnp.stack([v.get_value() for v in leaves])
        return first.replace(value, **({"out_sharding": ("layers", *names)} if names else {}))
    return jnp.stack(leaves)


def _layer_keys(layers) -> list:
    keys = sorted(layers.keys(), key=int)
    if keys != list(range(len(keys))) and keys != [str(i) for i in range(len(keys))]:
        raise ValueError(f"layer entries are not numbered 0..n-1: {keys}")
    return keys


def _raw(tree):
    """The nested dicts under an `nnx.State` (whose item access returns views)."""
    return tree.raw_mapping if isinstance(tree, nnx.State) else tree


def _replace(state, key, value):
    items = dict(_raw(state))
    items[key] = value
    return nnx.State(items) if isinstance(state, nnx.State) else items


def stack_layers(state, key: str = "layers"):
    """Unrolled state (`layers/0/...`, `layers/1/...`) -> scanned state (`layers/...` with a leading
    [num_layers] axis named "layers"). Works on an `nnx.State` of Variables or on a plain nested
    dict of arrays (`nnx.to_pure_dict`)."""
    layers = _raw(state)[key]
    stacked = jax.tree.map(_stack, *[layers[k] for k in _layer_keys(layers)], is_leaf=_is_variable)
    return _replace(state, key, stacked)


def unstack_layers(state, key: str = "layers"):
    """The inverse of `stack_layers`: scanned state -> one entry per layer."""
    stacked = _raw(state)[key]
    leaves = jax.tree.leaves(stacked, is_leaf=_is_variable)
    num_layers = (leaves[0].get_value() if _is_variable(leaves[0]) else leaves[0]).shape[0]

    def take(i):
        def one(leaf):
            if not _is_variable(leaf):
                return leaf[i]
            names = leaf.get_metadata().get("out_sharding")
            if names and names[0] != "layers":
                raise ValueError(f"expected a leading 'layers' axis, got logical axes {names}")
            return leaf.replace(leaf.get_value()[i], **({"out_sharding": tuple(names[1:])} if names else {}))
        return jax.tree.map(one, stacked, is_leaf=_is_variable)

    per_layer = {i: take(i) for i in range(num_layers)}
    return _replace(state, key, per_layer)


def unstack_all_layers(state, key: str = "layers"):
    """`unstack_layers` at every `key` entry of a nested state: a decoder's one stack, or an
    encoder-decoder's two (`encoder/layers`, `decoder/layers`)."""
    raw = _raw(state)
    if key in raw:
        return unstack_layers(state, key)
    items = {name: _raw(unstack_all_layers(value, key)) if isinstance(value, dict) else value
             for name, value in raw.items()}
    return nnx.State(items) if isinstance(state, nnx.State) else items
