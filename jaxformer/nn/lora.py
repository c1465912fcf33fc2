"""LoRA (Hu et al. 2021, "Low-Rank Adaptation of Large Language Models"): a frozen weight W and a
trained low-rank update,

    y = x W + (alpha / r) * dropout(x) A B        A: [*in, r], B: [r, *out], B starts at zero

so an adapted model starts out equal to its base. A `LoRA` module hangs off a `Linear` (or a
`QuantizedLinear`) as its `lora` attribute, so the base weight keeps its path
(`layers/0/attention/query/kernel`) and the adapter sits next to it (`.../query/lora/a`, `.../b`).
Its weights are `nnx.LoRAParam`s: `train.trainable=[LoRAParam]` trains the adapters alone.

Several adapters can share one base and one batch: `stack_adapters` (jaxformer.finetune) gives A
and B a leading [num_adapters] axis, and inside `with adapter_rows(ids):` row i of the batch uses
adapter ids[i] (-1: the base alone), gathered per row inside whatever jit-compiled program runs
the model (the decode loop, a train step).

LoRA's dropout needs a key the model call does not pass down to its linear layers; the train step
provides it with `with dropout_key(rng):` (no key: no dropout, as in evaluation).
"""

import contextlib
import contextvars
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.dropout import dropout

_ROWS: contextvars.ContextVar = contextvars.ContextVar("lora_adapter_rows", default=None)
_DROPOUT_KEY: contextvars.ContextVar = contextvars.ContextVar("lora_dropout_key", default=None)


@contextlib.contextmanager
def adapter_rows(ids: jax.Array | None):
    """Inside the block, stacked adapters serve row i of each batch with adapter `ids[i]`
    ([batch] int32; -1 is the base model alone). Safe under jit: the ids may be traced."""
    token = _ROWS.set(ids)
    try:
        yield
    finally:
        _ROWS.reset(token)


@contextlib.contextmanager
def dropout_key(key: jax.Array | None):
    """Inside the block, LoRA modules with dropout draw their masks from `key` (None: none)."""
    token = _DROPOUT_KEY.set(key)
    try:
        yield
    finally:
        _DROPOUT_KEY.reset(token)


def kaiming_uniform_a(key: jax.Array, shape: Sequence[int], fan_in: int, dtype) -> jax.Array:
    """PyTorch's kaiming_uniform_(a=sqrt(5)), which peft uses for lora_A: U(-1/sqrt(fan_in), +)."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, tuple(shape), dtype, -bound, bound)


class LoRA(nnx.Module):
    """The low-rank update of one linear layer with kernel [*lead, *in_shape, *out_shape].

    `lead` holds axes the layer's kernel has beyond its own (a scanned stack's [num_layers]);
    the adapter gets them too, so it slices with the kernel. `num_adapters` adds a stacked
    adapter axis after them (see the module docstring); each stacked adapter's scaling is folded
    into its B, and `scaling` is then 1.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], rank: int, *,
                 alpha: float, dropout_rate: float = 0.0, lead: Sequence[int] = (),
                 lead_axes: Sequence[str | None] = (), in_axes: Sequence[str | None] | None = None,
                 out_axes: Sequence[str | None] | None = None, num_adapters: int | None = None,
                 dtype=jnp.float32, param_dtype=jnp.float32, index: int = 0,
                 rngs: nnx.Rngs | None = None, a=None, b=None):
        if rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout_rate}")
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = 1.0 if num_adapters else self.alpha / rank
        self.dropout_rate, self.dtype, self.index = dropout_rate, dtype, index
        self.num_adapters = num_adapters
        self.merged = False  # True while the update lives inside the base kernel (`merge`)
        stack = tuple(lead) + ((num_adapters,) if num_adapters else ())
        stack_axes = tuple(lead_axes) + ((None,) if num_adapters else ())
        in_axes = tuple(in_axes) if in_axes is not None else (None,) * len(self.in_shape)
        out_axes = tuple(out_axes) if out_axes is not None else (None,) * len(self.out_shape)
        a_shape = stack + self.in_shape + (rank,)
        b_shape = stack + (rank,) + self.out_shape
        if a is None:
            a = kaiming_uniform_a(rngs.params(), a_shape, math.prod(self.in_shape), param_dtype)
        if b is None:
            b = jnp.zeros(b_shape, param_dtype)
        if tuple(a.shape) != a_shape or tuple(b.shape) != b_shape:
            raise ValueError(f"LoRA factors have shapes {tuple(a.shape)} and {tuple(b.shape)}, "
                             f"expected {a_shape} and {b_shape}")
        self.a = nnx.LoRAParam(jnp.asarray(a, param_dtype), out_sharding=stack_axes + in_axes + (None,),
                               eager_sharding=False)
        self.b = nnx.LoRAParam(jnp.asarray(b, param_dtype), out_sharding=stack_axes + (None,) + out_axes,
                               eager_sharding=False)

    @property
    def num_params(self) -> int:
        return self.a.get_value().size + self.b.get_value().size

    def delta_kernel(self) -> jax.Array:
        """scaling * A B as a kernel [*lead, *in_shape, *out_shape] (float32), one adapter only."""
        if self.num_adapters:
            raise ValueError("stacked adapters have no single kernel update: merge one adapter")
        a, b = self.a.get_value().astype(jnp.float32), self.b.get_value().astype(jnp.float32)
        n_in, n_out = len(self.in_shape), len(self.out_shape)
        lead = a.shape[:a.ndim - n_in - 1]
        a2 = a.reshape(*lead, math.prod(self.in_shape), self.rank)
        b2 = b.reshape(*lead, self.rank, math.prod(self.out_shape))
        return (self.scaling * (a2 @ b2)).reshape(*lead, *self.in_shape, *self.out_shape)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [batch, ..., *in_shape] -> the update [batch, ..., *out_shape] in float32 (zero
        while merged)."""
        n_in = len(self.in_shape)
        lead = x.shape[:x.ndim - n_in]
        d_in, d_out = math.prod(self.in_shape), math.prod(self.out_shape)
        if self.merged:
            return jnp.zeros((*lead, *self.out_shape), jnp.float32)
        h = x.astype(self.dtype).reshape(*lead, d_in)
        key = _DROPOUT_KEY.get()
        if self.dropout_rate and key is not None:
            h = dropout(h, self.dropout_rate, jax.random.fold_in(key, self.index))
        a = self.a[...].astype(self.dtype)
        b = self.b[...].astype(self.dtype)
        if not self.num_adapters:
            a, b = a.reshape(d_in, self.rank), b.reshape(self.rank, d_out)
            h = jnp.dot(h, a, preferred_element_type=jnp.float32).astype(self.dtype)
            y = jnp.dot(h, b, preferred_element_type=jnp.float32)
            return (self.scaling * y).reshape(*lead, *self.out_shape)
        ids = _ROWS.get()
        if ids is None:
            raise ValueError(f"this model holds {self.num_adapters} stacked LoRA adapters: run it "
                             f"inside `with jaxformer.nn.lora.adapter_rows(ids):` (one adapter id "
                             f"per batch row, -1 for the base alone)")
        ids = jnp.asarray(ids, jnp.int32)
        if ids.shape != lead[:1]:
            raise ValueError(f"adapter ids have shape {ids.shape}, the batch has {lead[:1]} rows")
        # The batched gather: row i takes adapter ids[i]'s factors ([batch, d_in, r], [batch, r, d_out]).
        safe = jnp.clip(ids, 0, self.num_adapters - 1)
        a_rows = jnp.take(a.reshape(self.num_adapters, d_in, self.rank), safe, axis=0)
        b_rows = jnp.take(b.reshape(self.num_adapters, self.rank, d_out), safe, axis=0)
        h = h.reshape(lead[0], -1, d_in)
        h = jnp.einsum("bti,bir->btr", h, a_rows, preferred_element_type=jnp.float32)
        y = jnp.einsum("btr,bro->bto", h.astype(self.dtype), b_rows,
                       preferred_element_type=jnp.float32)
        y = jnp.where((ids >= 0)[:, None, None], y, 0.0)
        return y.reshape(*lead, *self.out_shape)


def add_update(module, x: jax.Array, y: jax.Array) -> jax.Array:
    """y plus the LoRA update of `module` (a Linear or QuantizedLinear) if it carries one."""
    lora = getattr(module, "lora", None)
    if lora is None:
        return y
    return (y.astype(jnp.float32) + lora(x)).astype(y.dtype)
