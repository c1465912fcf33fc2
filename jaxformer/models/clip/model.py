"""CLIP (Radford et al. 2021): a text transformer and a ViT trained so that matching captions and
images land close together in one embedding space.

    tokens [T, L] -> token + learned positions -> N x causal pre-LN block -> final norm
                  -> the end-of-text token's state -> text_projection      -> text_embeds [T, P]
    images [I, H, W, C] -> ViT (pre-norm, no head) -> final norm of [CLS]
                  -> visual_projection                                     -> image_embeds [I, P]
    logits_per_text = scale * normalise(text_embeds) @ normalise(image_embeds)^T    [T, I]

`scale` is exp(logit_scale), a learned scalar clamped at `max_logit_scale`. `model(tokens,
images)` returns a ModelOutput with `logits` = `logits_per_text`, `logits_per_image` (its
transpose), `text_embeds` and `image_embeds` (unit length), `last_hidden_state` (the text tower's),
`pooler_output` (the image tower's pooled state). `contrastive_loss` is CLIP's symmetric loss and
`zero_shot_logits` classifies images by prompts.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.models.clip.config import CLIPConfig
from jaxformer.models.layers import ACTIVATION_AXES, run_layers, stacked_blocks
from jaxformer.models.output import ModelOutput
from jaxformer.models.vit.model import ViT
from jaxformer.nn.attention import Attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.embedding import Embed, LearnedPositions
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.linear import Linear
from jaxformer.nn.norms import LayerNorm
from jaxformer.nn.params import normal, param
from jaxformer.nn.sharding import constrain


def make_text_block(c: CLIPConfig, rngs: nnx.Rngs) -> TransformerBlock:
    t = c.text
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    attention = Attention(t.d_model, t.num_heads, use_bias=True, causal=True,
                          implementation=c.attention_impl, init=normal(c.init_std), dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)
    feed_forward = FeedForward(t.d_model, t.mlp_dim, activation=c.tower_activation("text"),
                               use_bias=True, init=normal(c.init_std), dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
    norm = lambda: LayerNorm(t.d_model, eps=c.tower_norm_eps("text"), param_dtype=param_dtype,
                             rngs=rngs)
    return TransformerBlock({"attention": (attention, norm()), "feed_forward": (feed_forward, norm())},
                            norm_position="pre", dropout_rate=c.dropout)


def eos_positions(tokens: jax.Array, eos_token_id: int) -> jax.Array:
    """[batch] index of the token each text is pooled at, as HF's CLIPTextTransformer picks it:
    the largest id when eos_token_id == 2 (OpenAI's configs), else the first eos_token_id."""
    if eos_token_id == 2:
        return jnp.argmax(tokens, axis=-1)
    return jnp.argmax(tokens == eos_token_id, axis=-1)


class CLIPTextTransformer(nnx.Module):
    def __init__(self, config: CLIPConfig, *, rngs: nnx.Rngs):
        c, t = config, config.text
        self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.embed = Embed(t.vocab_size, t.d_model, init_std=c.init_std, dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)
        self.position_embedding = LearnedPositions(t.max_seq_len, t.d_model, init_std=c.init_std,
                                                   dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = (stacked_blocks(lambda r: make_text_block(c, r), t.num_layers, rngs)
                       if c.scan_layers else
                       nnx.List([make_text_block(c, rngs) for _ in range(t.num_layers)]))
        self.final_norm = LayerNorm(t.d_model, eps=c.tower_norm_eps("text"),
                                    param_dtype=param_dtype, rngs=rngs)

    def __call__(self, tokens: jax.Array, segment_ids: jax.Array | None = None,
                 *, dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """tokens [batch, time] (segment_ids: 1 for text, 0 for padding) -> (last hidden state
        [batch, time, embed] after the final norm, pooled [batch, embed] at end-of-text)."""
        c = self.config
        batch, time = tokens.shape
        if time > c.text.max_seq_len:
            raise ValueError(f"texts of {time} tokens exceed model.text.max_seq_len="
                             f"{c.text.max_seq_len}: shorten them")
        positions = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))
        x = constrain(self.embed(tokens) + self.position_embedding(positions), ACTIVATION_AXES)
        keys = (jax.random.split(dropout_rng, c.text.num_layers) if dropout_rng is not None else None)
        ctx = BlockContext(positions=positions, segment_ids=segment_ids)
        x, _, _ = run_layers(self.layers, x, ctx, None, keys, scan=c.scan_layers, remat=c.remat)
        x = self.final_norm(x)
        pooled = x[jnp.arange(batch), eos_positions(tokens, c.text.eos_token_id)]
        return x, pooled


class CLIP(nnx.Module):
    def __init__(self, config: CLIPConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.text = CLIPTextTransformer(c, rngs=rngs)
        self.vision = ViT(c.vision_config(), rngs=rngs)
        projection = lambda d: Linear(d, c.projection_dim, in_axes=("embed",), out_axes=(None,),
                                      use_bias=False, init=normal(c.init_std), dtype=dtype,
                                      param_dtype=param_dtype, out_dtype=jnp.float32, rngs=rngs)
        self.text_projection = projection(c.text.d_model)
        self.visual_projection = projection(c.vision.d_model)
        init = lambda key, shape, dtype: jnp.full(shape, c.logit_scale_init, dtype)
        self.logit_scale = param(rngs.params(), init, (), (), jnp.float32)

    def text_features(self, tokens: jax.Array, segment_ids: jax.Array | None = None, *,
                      dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """(projected text embeddings [batch, projection] float32, not normalised (HF's
        `get_text_features`), the text tower's last hidden state)."""
        hidden, pooled = self.text(tokens, segment_ids, dropout_rng=dropout_rng)
        return self.text_projection(pooled), hidden

    def image_features(self, images: jax.Array, *, dropout_rng: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array]:
        """(projected image embeddings [batch, projection] float32, not normalised (HF's
        `get_image_features`), the pooled [CLS] state after the final norm)."""
        hidden = self.vision.encode(images, dropout_rng=dropout_rng)
        pooled = self.vision.final_norm(hidden[:, 0])
        return self.visual_projection(pooled), pooled

    def scale(self) -> jax.Array:
        """exp(logit_scale), clamped at max_logit_scale (the gradient stops at the clamp)."""
        return jnp.exp(jnp.minimum(self.logit_scale[...], math.log(self.config.max_logit_scale)))

    def __call__(self, tokens: jax.Array, images: jax.Array, segment_ids: jax.Array | None = None,
                 *, dropout_rng: jax.Array | None = None) -> ModelOutput:
        """tokens [texts, time] int (segment_ids [texts, time]: 1 text, 0 padding); images
        [images, height, width, channels] float32. dropout_rng: a key turns dropout on."""
        keys = jax.random.split(dropout_rng) if dropout_rng is not None else (None, None)
        text, hidden = self.text_features(tokens, segment_ids, dropout_rng=keys[0])
        image, pooled = self.image_features(images, dropout_rng=keys[1])
        text, image = normalise(text), normalise(image)
        logits_per_text = self.scale() * jnp.matmul(text, image.T, precision=jax.lax.Precision.HIGHEST)
        return ModelOutput(logits=logits_per_text, logits_per_text=logits_per_text,
                           logits_per_image=logits_per_text.T, text_embeds=text,
                           image_embeds=image, last_hidden_state=hidden, pooler_output=pooled)


def normalise(x: jax.Array) -> jax.Array:
    """Unit L2 length along the last axis."""
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def contrastive_loss(logits_per_text: jax.Array, weights: jax.Array | None = None
                     ) -> tuple[jax.Array, jax.Array]:
    """CLIP's symmetric cross-entropy over a batch of matching pairs (text i goes with image i):
    per pair, the mean of the text->image and image->text cross-entropies. Returns (sum over pairs
    weighted by `weights` [batch] (default 1), sum of the weights)."""
    n = logits_per_text.shape[0]
    logits = logits_per_text.astype(jnp.float32)
    # The diagonal holds the matching pairs: -log softmax there, along rows and along columns.
    per_pair = -0.5 * (jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
                       + jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
    weights = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
    return jnp.sum(per_pair * weights), jnp.sum(weights)


def zero_shot_logits(model: CLIP, images: jax.Array, class_tokens: jax.Array,
                     class_segment_ids: jax.Array | None = None) -> jax.Array:
    """[images, classes]: each image's scaled similarity to each class's prompt (one tokenised
    prompt per class, `class_tokens` [classes, time]); argmax is the zero-shot prediction."""
    return model(class_tokens, images, class_segment_ids).logits_per_image
