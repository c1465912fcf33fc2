"""An image-to-text model, after HF's `VisionEncoderDecoderModel`: a ViT reads the image, a text
decoder writes about it.

    images [B, H, W, C] -> ViT (no head) -> final norm -> patch states [B, 1 + patches, De]
                        -> enc_to_dec_proj (only when De != Dd, as HF adds it) -> memory
    tokens [B, T] -> embed + positions -> L x [causal self-attention, cross-attention over the
                     memory, feed-forward] -> output layer -> logits [B, T, V]

The encoder is `jaxformer.models.vit.ViT`; the decoder is the encoder-decoder family's decoder
stack and blocks (`jaxformer.models.encoder_decoder.Stack`), so cross-attention, its
`MemoryCache`, scanning and rematerialisation are those of T5 / BART. The memory keeps the [CLS]
state at index 0 and the patches after it in row-major order, as HF passes the ViT's
last_hidden_state to the decoder.

Decoding: `encode` once, then `decode` with a cache from `init_cache`: the first `decode` call
(given the memory) writes every layer's cross-attention keys and values of the patches into the
cache, later calls only read them. `jaxformer.generate.generate` / `beam_search` take images in
place of prompts for this family.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.models.encoder_decoder.model import (Stack, _inits, decoder_positions_and_segments,
                                                    init_decoder_cache)
from jaxformer.models.output import ModelOutput
from jaxformer.models.vision_encoder_decoder.config import VisionEncoderDecoderConfig
from jaxformer.models.vit.model import ViT
from jaxformer.nn.embedding import Embed, padded
from jaxformer.nn.linear import Linear
from jaxformer.nn.params import normal
from jaxformer.nn.sharding import constrain


class VisionEncoderDecoder(nnx.Module):
    def __init__(self, config: VisionEncoderDecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = self.text_config = config.decoder_config()
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        inits = _inits(c)
        self.encoder = ViT(config.encoder_config(), rngs=rngs)
        self.enc_to_dec_proj = (
            Linear(config.encoder.d_model, c.d_model, in_axes=("embed",), out_axes=("embed",),
                   init=normal(config.init_std), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            if config.encoder.d_model != c.d_model else None)
        self.embed = Embed(c.vocab_size, c.d_model, padded_size=c.padded_vocab_size,
                           init_std=inits["embed"], dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.decoder = Stack(c, decoder=True, rngs=rngs)
        self.lm_head = (None if c.tie_embeddings else
                        Linear(c.d_model, c.padded_vocab_size, in_axes=("embed",), out_axes=("vocab",),
                               use_bias=False, init=padded(normal(inits["head"]), c.vocab_size, 1),
                               dtype=dtype, param_dtype=param_dtype, out_dtype=jnp.float32, rngs=rngs))

    def encode(self, images: jax.Array, *, dropout_rng: jax.Array | None = None) -> jax.Array:
        """images [batch, height, width, channels] (normalised pixels, NHWC) -> memory
        [batch, 1 + patches, decoder d_model]: the ViT's final states, [CLS] first."""
        states = self.encoder(images, dropout_rng=dropout_rng).last_hidden_state
        return states if self.enc_to_dec_proj is None else self.enc_to_dec_proj(states)

    def decode(self, decoder_tokens: jax.Array, memory: jax.Array | None = None, *,
               decoder_positions: jax.Array | None = None,
               decoder_segment_ids: jax.Array | None = None, cache=None,
               dropout_rng: jax.Array | None = None) -> ModelOutput:
        """The decoder over `decoder_tokens` [batch, time] attending to `memory` (from `encode`;
        None while decoding with a filled cache). decoder_positions are required with a cache.
        Returns a ModelOutput: logits [batch, time, vocab] float32, cache, aux, last_hidden_state."""
        c = self.text_config
        decoder_positions, decoder_segment_ids = decoder_positions_and_segments(
            decoder_tokens, decoder_positions, decoder_segment_ids, cache)
        # Every patch is real: no memory segment ids (no padding in the memory).
        x, cache, aux = self.decoder(self.embed(decoder_tokens), decoder_positions,
                                     decoder_segment_ids, memory=memory, cache=cache,
                                     dropout_rng=dropout_rng)
        logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)[..., :c.vocab_size]
        return ModelOutput(logits=constrain(logits, ("batch", "length", "vocab")), cache=cache,
                           aux=aux, last_hidden_state=x)

    def __call__(self, images: jax.Array, decoder_tokens: jax.Array,
                 decoder_segment_ids: jax.Array | None = None, *,
                 decoder_positions: jax.Array | None = None, cache=None,
                 dropout_rng: jax.Array | None = None) -> ModelOutput:
        """Teacher forcing: `images` [batch, height, width, channels] and the decoder inputs
        `decoder_tokens` [batch, time] (the caption behind `decoder_start_token_id`); segment id 0
        marks padding. Returns a ModelOutput with logits [batch, time, vocab] and
        encoder_last_hidden_state (the memory)."""
        keys = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        memory = self.encode(images, dropout_rng=keys[0])
        out = self.decode(decoder_tokens, memory, decoder_positions=decoder_positions,
                          decoder_segment_ids=decoder_segment_ids, cache=cache, dropout_rng=keys[1])
        return out.replace(encoder_last_hidden_state=memory)

    def init_cache(self, batch: int, max_len: int, memory_len: int | None = None):
        """An empty decoding cache for `batch` rows: `max_len` self-attention slots per decoder
        layer and room for a memory of `memory_len` states (default: [CLS] and the patches of a
        config-sized image; the memory given to the first `decode` sets the real length)."""
        memory_len = 1 + self.config.num_patches if memory_len is None else memory_len
        return init_decoder_cache(self.text_config, batch, max_len, memory_len)
