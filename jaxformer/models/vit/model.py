"""The Vision Transformer (Dosovitskiy et al. 2021): an image as a sequence of patches.

    images [B, H, W, C] float32 -> patches -> linear map -> prepend [CLS] -> + learned positions
        -> (pre-norm, CLIP only) -> N x pre-LN TransformerBlock (bidirectional attention)
        -> final LayerNorm -> classifier on [CLS] (logits) / pooler (dense + tanh on [CLS])

`model(images)` returns a ModelOutput: `logits` [B, num_labels] float32 (None without a head),
`last_hidden_state` [B, 1 + patches, D] after the final norm, `pooler_output` [B, D] (with the
pooler). Any image size whose sides hold at least one patch works: the position table is resized
to its patch grid by bicubic interpolation, as HF's `interpolate_pos_encoding=True` does.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.models.layers import ACTIVATION_AXES, run_layers, stacked_blocks
from jaxformer.models.output import ModelOutput
from jaxformer.models.vit.config import ViTConfig
from jaxformer.nn.attention import Attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.dropout import dropout
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.linear import Linear
from jaxformer.nn.norms import LayerNorm
from jaxformer.nn.params import normal, param
from jaxformer.nn.patches import PatchEmbedding, interpolate_grid
from jaxformer.nn.sharding import constrain


def make_block(c: ViTConfig, rngs: nnx.Rngs) -> TransformerBlock:
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    init = normal(c.init_std)
    attention = Attention(c.d_model, c.num_heads, use_bias=True, causal=False,
                          implementation=c.attention_impl, init=init, dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)
    feed_forward = FeedForward(c.d_model, c.mlp_dim, activation=c.activation, use_bias=True,
                               init=init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    norm = lambda: LayerNorm(c.d_model, eps=c.norm_eps, param_dtype=param_dtype, rngs=rngs)
    return TransformerBlock({"attention": (attention, norm()), "feed_forward": (feed_forward, norm())},
                            norm_position="pre", dropout_rate=c.dropout)


class ViT(nnx.Module):
    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.patch_embedding = PatchEmbedding(c.patch_size, c.num_channels, c.d_model,
                                              use_bias=c.patch_bias, init=normal(c.init_std),
                                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cls_token = param(rngs.params(), normal(c.init_std), (c.d_model,), ("embed",), param_dtype)
        self.position_embedding = param(rngs.params(), normal(c.init_std),
                                        (1 + c.num_patches, c.d_model), ("position", "embed"),
                                        param_dtype)
        norm = lambda: LayerNorm(c.d_model, eps=c.norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.pre_norm = norm() if c.pre_norm else None
        self.layers = (stacked_blocks(lambda r: make_block(c, r), c.num_layers, rngs) if c.scan_layers
                       else nnx.List([make_block(c, rngs) for _ in range(c.num_layers)]))
        self.final_norm = norm()
        self.pooler = (Linear(c.d_model, c.d_model, in_axes=("embed",), out_axes=("embed",),
                              init=normal(c.init_std), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                       if c.pooler else None)
        self.classifier = (Linear(c.d_model, c.num_labels, in_axes=("embed",), out_axes=(None,),
                                  init=normal(c.init_std), dtype=dtype, param_dtype=param_dtype,
                                  out_dtype=jnp.float32, rngs=rngs)
                           if c.num_labels else None)

    def positions_for(self, rows: int, cols: int) -> jax.Array:
        """The position table for a rows x cols patch grid: [1 + rows * cols, embed] ([CLS]'s
        row unchanged, the patch rows resized from the config's square grid)."""
        table = self.position_embedding[...]
        g = self.config.grid_size
        return jnp.concatenate([table[:1], interpolate_grid(table[1:], (g, g), (rows, cols))])

    def embed(self, images: jax.Array) -> jax.Array:
        """images [batch, height, width, channels] -> [batch, 1 + patches, embed]: [CLS] then the
        patches, with positions (no dropout, no pre-norm)."""
        c = self.config
        if images.ndim != 4 or images.shape[-1] != c.num_channels:
            raise ValueError(f"images must be [batch, height, width, {c.num_channels}] (NHWC), got "
                             f"shape {tuple(images.shape)}")
        rows, cols = images.shape[1] // c.patch_size, images.shape[2] // c.patch_size
        if not rows or not cols:
            raise ValueError(f"images of {images.shape[1]}x{images.shape[2]} pixels hold no "
                             f"{c.patch_size}x{c.patch_size} patch: resize them to at least that")
        patches = self.patch_embedding(images)
        cls = jnp.broadcast_to(self.cls_token[...].astype(patches.dtype),
                               (patches.shape[0], 1, c.d_model))
        x = jnp.concatenate([cls, patches], axis=1)
        return x + self.positions_for(rows, cols).astype(x.dtype)

    def encode(self, images: jax.Array, *, dropout_rng: jax.Array | None = None) -> jax.Array:
        """images -> the last block's output [batch, 1 + patches, embed], before the final norm."""
        c = self.config
        x = self.embed(images)
        keys = (jax.random.split(dropout_rng, c.num_layers + 1) if dropout_rng is not None
                else None)
        x = dropout(x, c.dropout, None if keys is None else keys[-1])
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        x = constrain(x, ACTIVATION_AXES)
        batch, time = x.shape[:2]
        ctx = BlockContext(positions=jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time)))
        x, _, _ = run_layers(self.layers, x, ctx, None, None if keys is None else keys[:c.num_layers],
                             scan=c.scan_layers, remat=c.remat)
        return x

    def __call__(self, images: jax.Array, *, dropout_rng: jax.Array | None = None) -> ModelOutput:
        """images: [batch, height, width, channels] float32 (normalised pixels). dropout_rng: a
        key turns dropout on (training). Returns a ModelOutput (see the module docstring)."""
        x = self.final_norm(self.encode(images, dropout_rng=dropout_rng))
        cls = x[:, 0]
        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(cls)
            pooled = jnp.tanh(pooled) if self.config.pooler_act == "tanh" else pooled
        logits = self.classifier(cls) if self.classifier is not None else None
        return ModelOutput(logits=logits, last_hidden_state=x, pooler_output=pooled)
