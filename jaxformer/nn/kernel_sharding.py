"""Running a Pallas/Mosaic attention kernel on a mesh: one call per device inside `jax.shard_map`.

XLA cannot partition a custom kernel by itself ("Mosaic kernels cannot be automatically
partitioned"), so a kernel that must run on a mesh of more than one device is called on each
device's block: the batch split as the logical rules split "batch", the heads as they split
"heads" (key/value heads with them), the time axis whole (a `context` axis runs ring attention
instead, nn/ring_attention.py). Without a mesh, or on one device, the kernel is called directly.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec

from jaxformer.nn.sharding import logical_to_spec


def _axes(entry) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def per_device(kernel: Callable, q: jax.Array, k: jax.Array, v: jax.Array,
               segment_ids: jax.Array | None) -> jax.Array:
    """kernel(q, k, v, segment_ids) -> out, with q [batch, time, heads, dim], k/v [batch, time,
    kv_heads, dim], segment_ids [batch, time] or None, called per device on the mesh in context.

    Heads are split over the rules' "heads" axes when both head counts divide them; when only the
    query heads do and the split is a multiple of the key/value heads (MQA and narrow GQA under
    tensor parallelism), each key/value head is repeated so every device holds the ones its query
    heads read. Otherwise the heads stay whole on every device."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or mesh.are_all_axes_manual:
        return kernel(q, k, v, segment_ids)
    rules = nn.get_logical_axis_rules()
    sizes = dict(mesh.shape)
    batch_spec = logical_to_spec(("batch",), q.shape[:1], rules, sizes)[0] if rules else None
    head_axes = _axes(logical_to_spec(("heads",), q.shape[2:3], rules, sizes)[0]) if rules else ()
    split = math.prod(sizes[name] for name in head_axes)
    kv_heads = k.shape[2]
    if split > 1 and kv_heads % split:
        if split % kv_heads == 0:
            repeat = split // kv_heads
            k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
        else:
            head_axes = ()
    head_spec = None if not head_axes else head_axes[0] if len(head_axes) == 1 else head_axes
    qkv_spec = PartitionSpec(batch_spec, None, head_spec, None)
    seg_spec = PartitionSpec(batch_spec, None)
    if segment_ids is None:
        fn = jax.shard_map(lambda q, k, v: kernel(q, k, v, None), mesh=mesh,
                           in_specs=(qkv_spec,) * 3, out_specs=qkv_spec, check_vma=False)
        return fn(q, k, v)
    fn = jax.shard_map(kernel, mesh=mesh, in_specs=(qkv_spec,) * 3 + (seg_spec,),
                       out_specs=qkv_spec, check_vma=False)
    return fn(q, k, v, segment_ids)
