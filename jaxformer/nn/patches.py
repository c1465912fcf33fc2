"""Images as token sequences: non-overlapping patches through one linear map, and resizing a grid of
learned patch positions to another image size.

    patches = patchify(images, 16)           # [B, 224, 224, 3] -> [B, 196, 16, 16, 3]
    tokens = PatchEmbedding(16, 3, 768, rngs=rngs)(images)   # -> [B, 196, 768]

A linear map of each flattened patch is what ViT's paper describes and what HF computes with a
Conv2d whose kernel size equals its stride: the same sums, so the kernel converts by a transpose
([embed, channels, p, p] -> [p, p, channels, embed]).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.nn.linear import Linear
from jaxformer.nn.params import Initializer


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """[batch, height, width, channels] -> [batch, patches, patch, patch, channels], patches in
    row-major order (left to right, then top to bottom). Pixels past the last whole patch are
    dropped, as a stride-p convolution drops them."""
    batch, height, width, channels = images.shape
    rows, cols = height // patch_size, width // patch_size
    x = images[:, :rows * patch_size, :cols * patch_size]
    x = x.reshape(batch, rows, patch_size, cols, patch_size, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, rows * cols, patch_size, patch_size, channels)


class PatchEmbedding(nnx.Module):
    """Each patch_size x patch_size x channels patch -> one d_model vector (kernel
    [p, p, channels, embed], optional bias)."""

    def __init__(self, patch_size: int, channels: int, d_model: int, *, use_bias: bool = True,
                 init: Initializer | None = None, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        self.patch_size = patch_size
        self.projection = Linear((patch_size, patch_size, channels), d_model,
                                 in_axes=(None, None, None), out_axes=("embed",), use_bias=use_bias,
                                 init=init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        """images [batch, height, width, channels] float -> [batch, patches, embed]."""
        return self.projection(patchify(images, self.patch_size))


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution weights of the 4 neighbours at offsets -1, 0, 1, 2 for a fractional
    position t in [0, 1); a=-0.75 is PyTorch's (and OpenCV's) choice for bicubic."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] matrix resizing one axis as torch's `interpolate(mode="bicubic",
    align_corners=False)` does: source coordinate (i + 0.5) * in/out - 0.5, four taps, indices
    past the edges clamped to the edge."""
    scale = in_size / out_size
    source = (np.arange(out_size) + 0.5) * scale - 0.5
    base = np.floor(source)
    weights = _cubic_weights(source - base)
    matrix = np.zeros((out_size, in_size))
    for tap in range(4):
        index = np.clip(base.astype(int) - 1 + tap, 0, in_size - 1)
        np.add.at(matrix, (np.arange(out_size), index), weights[:, tap])
    return matrix


def interpolate_grid(table: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int]) -> jax.Array:
    """A [rows * cols, dim] table of per-patch vectors laid out on a `grid` -> the same on
    `new_grid`, by separable bicubic interpolation (HF's `interpolate_pos_encoding`). The matrices
    are constants of the shapes, so under jit this is two small matmuls."""
    (rows, cols), (new_rows, new_cols) = grid, new_grid
    if (rows, cols) == (new_rows, new_cols):
        return table
    dim = table.shape[-1]
    x = table.reshape(rows, cols, dim).astype(jnp.float32)
    row_matrix = jnp.asarray(bicubic_matrix(rows, new_rows), jnp.float32)
    col_matrix = jnp.asarray(bicubic_matrix(cols, new_cols), jnp.float32)
    x = jnp.einsum("ri,ijd,cj->rcd", row_matrix, x, col_matrix,
                   precision=jax.lax.Precision.HIGHEST)
    return x.reshape(new_rows * new_cols, dim).astype(table.dtype)
