"""Weight-table rows: which HF tensor becomes which jaxformer parameter, and how.

Each `Tensor` row names one HF tensor, the shape config.json implies for it, the jaxformer
parameter path(s) it fills, and the two layout changes (HF -> jaxformer and back). Import and
export both read a family's table (built from these rows), so they cannot drift apart.

jaxformer kernels are [in, out] with heads as their own axes: query [embed, heads, head_dim],
key/value [embed, kv_heads, head_dim], out [heads, head_dim, embed]; feed-forward up/gate
[embed, mlp], down [mlp, embed]; lm_head [embed, padded vocab]. PyTorch's nn.Linear stores
[out, in].
"""

import dataclasses
from collections.abc import Callable

import numpy as np

ParamPath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str  # HF tensor name
    shape: tuple[int, ...]  # its shape in the HF file
    params: tuple[ParamPath, ...]  # the jaxformer parameters it fills
    to_jax: Callable[[np.ndarray], tuple[np.ndarray, ...]]  # HF array -> one array per param
    to_hf: Callable[..., np.ndarray]  # the params' arrays -> HF array
    # (index, count): the tensor is entry `index` of the parameter's leading axis of `count`
    # (one expert of a stacked [experts, ...] parameter); None: the whole parameter.
    part: tuple[int, int] | None = None


def reshaped(name: str, hf_shape: tuple[int, ...], path: ParamPath, shape: tuple[int, ...],
             *, transpose: bool = False) -> Tensor:
    """One HF tensor to one parameter: optionally transposed ([out, in] -> [in, out]), then
    reshaped (e.g. [embed, heads * head_dim] -> [embed, heads, head_dim])."""

    def to_jax(w):
        return ((w.T if transpose else w).reshape(shape),)

    def to_hf(p):
        return p.reshape(hf_shape[::-1]).T if transpose else p.reshape(hf_shape)

    return Tensor(name, tuple(hf_shape), (path,), to_jax, to_hf)


def fused_qkv(name: str, hf_shape: tuple[int, ...], prefix: ParamPath, suffix: str,
              heads: int, head_dim: int, parts: tuple[str, ...] = ("query", "key", "value")
              ) -> Tensor:
    """GPT-2's c_attn: [..., 3 * heads * head_dim] with q|k|v on the last axis -> three
    [..., heads, head_dim] parameters (or the `parts` given: GPT-2's cross-attention fuses only
    key|value)."""
    paths = tuple(prefix + (part, suffix) for part in parts)

    def to_jax(w):
        split = w.reshape(*w.shape[:-1], len(parts), heads, head_dim)
        return tuple(np.moveaxis(split, -3, 0))

    def to_hf(*arrays):
        return np.stack(arrays, axis=-3).reshape(hf_shape)

    return Tensor(name, tuple(hf_shape), paths, to_jax, to_hf)


def vocab_table(name: str, vocab_size: int, dim: int, path: ParamPath, padded_size: int, *,
                transpose: bool = False) -> Tensor:
    """An HF [vocab, dim] table (embedding or LM head) to ours, whose vocabulary axis has
    `padded_size` entries (zeros past `vocab_size`): [padded, dim], or [dim, padded] with
    `transpose` (an untied LM head's kernel). Export drops the padding."""
    pad = padded_size - vocab_size

    def to_jax(w):
        if transpose:
            return (np.pad(w.T, [(0, 0), (0, pad)]),)
        return (np.pad(w, [(0, pad), (0, 0)]),)

    def to_hf(p):
        return p[:, :vocab_size].T if transpose else p[:vocab_size]

    return Tensor(name, (vocab_size, dim), (path,), to_jax, to_hf)


def expert_slice(name: str, hf_shape: tuple[int, ...], path: ParamPath, shape: tuple[int, ...],
                 index: int, count: int, *, transpose: bool = False) -> Tensor:
    """One expert's HF tensor (e.g. Mixtral's `experts.3.w1.weight`, [out, in]) to entry `index`
    of a parameter stacked over `count` experts, optionally transposed, then reshaped to `shape`
    (the entry's shape)."""
    row = reshaped(name, hf_shape, path, shape, transpose=transpose)
    return dataclasses.replace(row, part=(index, count))
