"""Weight-only quantization formats for a kernel W [..., in, out] (any leading axes, e.g. a scanned
stack's layers, are kept; quantization runs along the contracting `in` axis of each output
column, so a matmul can dequantize block by block).

- int8: per output channel, symmetric: q = round(W / s), s = absmax over `in` / 127.
  Error per entry at most s / 2.
- int4: group-wise along `in` (groups of `group_size`), symmetric in [-7, 7], s = absmax / 7,
  stored offset by 8, two values per byte. Error at most s / 2.
- nf4 (Dettmers et al. 2023, QLoRA): blocks of `block_size` (64) along `in`, each scaled by its
  absmax onto [-1, 1] and rounded to the nearest of the 16 NormalFloat values; two codes per
  byte. Double quantization: the block absmaxes (float32, one per 64 weights) are themselves
  quantized to 8 bits, in blocks of 256 after subtracting their mean, leaving one float32 per
  256 x 64 weights. Error at most absmax * (largest half-gap of the code) + the absmax's own
  quantization error.

Bits per weight: int8 8 + 32/in; int4 4 + 32/group; nf4 4 + 8/64 + 32/(64 * 256) = 4.127.
"""

import jax
import jax.numpy as jnp
import numpy as np

FORMATS = ("int8", "int4", "nf4")

# The 16 NF4 values as published with QLoRA (bitsandbytes' NF4 table): quantiles of N(0, 1),
# 8 on the positive side and 7 on the negative side so that 0 is exact, scaled to [-1, 1].
NF4_VALUES = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)


def _absmax(w: jax.Array, axis: int, keepdims=True) -> jax.Array:
    return jnp.max(jnp.abs(w.astype(jnp.float32)), axis=axis, keepdims=keepdims)


def _safe(scale: jax.Array) -> jax.Array:
    """A zero scale (an all-zero column or block) divides as one; its values quantize to 0."""
    return jnp.where(scale == 0, 1.0, scale)


# --- packing: two 4-bit codes per byte, pairs of consecutive rows of the `in` axis ---

def pack_nibbles(codes: jax.Array) -> jax.Array:
    """codes [..., in, out] with values 0..15 (in even) -> uint8 [..., in / 2, out]: row 2k in
    the low nibble, row 2k + 1 in the high one."""
    if codes.shape[-2] % 2:
        raise ValueError(f"4-bit packing needs an even number of input rows, got {codes.shape[-2]}")
    codes = codes.astype(jnp.uint8)
    return codes[..., 0::2, :] | (codes[..., 1::2, :] << 4)


def unpack_nibbles(packed: jax.Array) -> jax.Array:
    """The inverse of `pack_nibbles`: uint8 [..., in / 2, out] -> codes [..., in, out] (uint8)."""
    low, high = packed & 0x0F, packed >> 4
    stacked = jnp.stack([low, high], axis=-2)  # [..., in / 2, 2, out]
    return stacked.reshape(*packed.shape[:-2], packed.shape[-2] * 2, packed.shape[-1])


# --- int8, per output channel ---

def quantize_int8(w: jax.Array) -> dict:
    scale = _absmax(w, -2) / 127.0  # [..., 1, out]
    q = jnp.clip(jnp.round(w.astype(jnp.float32) / _safe(scale)), -127, 127).astype(jnp.int8)
    return {"qvalue": q, "scale": scale}


def dequantize_int8(parts: dict, dtype=jnp.float32) -> jax.Array:
    return (parts["qvalue"].astype(jnp.float32) * parts["scale"]).astype(dtype)


# --- int4, group-wise ---

def _groups(w: jax.Array, size: int) -> jax.Array:
    """[..., in, out] -> [..., in / size, size, out]."""
    d_in = w.shape[-2]
    if d_in % size:
        raise ValueError(f"the input dimension {d_in} is not a multiple of the group size {size}: "
                         f"pick a group size that divides it")
    return w.reshape(*w.shape[:-2], d_in // size, size, w.shape[-1])


def quantize_int4(w: jax.Array, group_size: int = 64) -> dict:
    if group_size % 2:
        raise ValueError(f"int4 group size must be even (two values per byte), got {group_size}")
    groups = _groups(w.astype(jnp.float32), group_size)
    scale = _absmax(groups, -2) / 7.0  # [..., in / g, 1, out]
    q = jnp.clip(jnp.round(groups / _safe(scale)), -7, 7).astype(jnp.int32) + 8
    return {"packed": pack_nibbles(q.reshape(w.shape)), "scale": scale[..., 0, :]}


def dequantize_int4(parts: dict, dtype=jnp.float32) -> jax.Array:
    codes = unpack_nibbles(parts["packed"]).astype(jnp.float32) - 8.0
    scale = parts["scale"]  # [..., in / g, out]
    group = codes.shape[-2] // scale.shape[-2]
    return (_groups(codes, group) * scale[..., None, :]).reshape(codes.shape).astype(dtype)


# --- NF4 with double quantization of the block scales ---

def _double_quantize(absmax: jax.Array, block: int) -> dict:
    """absmax [..., n_blocks, out] (positive) -> 8-bit codes around their mean, one float32
    scale per `block` of them (flattened per matrix) and the mean."""
    flat = absmax.reshape(*absmax.shape[:-2], -1)
    offset = jnp.mean(flat, axis=-1, keepdims=True)
    centered = flat - offset
    pad = (-flat.shape[-1]) % block
    padded = jnp.pad(centered, [(0, 0)] * (flat.ndim - 1) + [(0, pad)])
    blocks = padded.reshape(*flat.shape[:-1], -1, block)
    scale = _absmax(blocks, -1) / 127.0  # [..., n_blocks2, 1]
    q = jnp.clip(jnp.round(blocks / _safe(scale)), -127, 127).astype(jnp.int8)
    return {"absmax_q": q.reshape(*flat.shape[:-1], -1)[..., :flat.shape[-1]].reshape(absmax.shape),
            "absmax_scale": scale[..., 0], "absmax_offset": offset}


def _double_dequantize(parts: dict, block: int) -> jax.Array:
    q = parts["absmax_q"]
    flat = q.reshape(*q.shape[:-2], -1).astype(jnp.float32)
    scale = jnp.repeat(parts["absmax_scale"], block, axis=-1)[..., :flat.shape[-1]]
    return (flat * scale + parts["absmax_offset"]).reshape(q.shape)


def nf4_codes(normalized: jax.Array) -> jax.Array:
    """Index of the nearest NF4 value for values in [-1, 1]."""
    values = jnp.asarray(NF4_VALUES)
    midpoints = (values[1:] + values[:-1]) / 2
    return jnp.searchsorted(midpoints, normalized, side="left").astype(jnp.uint8)


def quantize_nf4(w: jax.Array, block_size: int = 64, scale_block: int = 256) -> dict:
    blocks = _groups(w.astype(jnp.float32), block_size)
    absmax = _absmax(blocks, -2)  # [..., in / 64, 1, out]
    codes = nf4_codes(blocks / _safe(absmax)).reshape(w.shape)
    return {"packed": pack_nibbles(codes), **_double_quantize(absmax[..., 0, :], scale_block)}


def nf4_absmax(parts: dict, scale_block: int = 256) -> jax.Array:
    """The block absmaxes [..., in / block, out] as the double quantization gives them back."""
    return _double_dequantize(parts, scale_block)


def dequantize_nf4(parts: dict, dtype=jnp.float32, scale_block: int = 256) -> jax.Array:
    codes = unpack_nibbles(parts["packed"])
    values = jnp.take(jnp.asarray(NF4_VALUES), codes.astype(jnp.int32), axis=0)
    absmax = nf4_absmax(parts, scale_block)
    block = codes.shape[-2] // absmax.shape[-2]
    return (_groups(values, block) * absmax[..., None, :]).reshape(codes.shape).astype(dtype)


def quantize(w: jax.Array, fmt: str, group_size: int = 64) -> dict:
    """W [..., in, out] -> the format's arrays (a dict of name -> array)."""
    if fmt == "int8":
        return quantize_int8(w)
    if fmt == "int4":
        return quantize_int4(w, group_size)
    if fmt == "nf4":
        return quantize_nf4(w, group_size)
    raise ValueError(f"unknown quantization format {fmt!r}: use one of {list(FORMATS)}")


def dequantize(parts: dict, fmt: str, dtype=jnp.float32) -> jax.Array:
    """The format's arrays -> W [..., in, out] in `dtype`."""
    if fmt == "int8":
        return dequantize_int8(parts, dtype)
    if fmt == "int4":
        return dequantize_int4(parts, dtype)
    if fmt == "nf4":
        return dequantize_nf4(parts, dtype)
    raise ValueError(f"unknown quantization format {fmt!r}: use one of {list(FORMATS)}")
