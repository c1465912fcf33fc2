"""The encoder-decoder: the 2017 Transformer, T5 (v1.0 and v1.1), BART and Marian from one config.

    source tokens -> embed (shared) -> encoder stack: N x [self-attention, feed-forward] -> memory
    target tokens -> embed (shared) -> decoder stack: M x [causal self-attention,
                     cross-attention over the memory, feed-forward] -> output layer -> logits

Each stack owns its position scheme (a learned or sinusoidal table added to the embeddings, or
T5's relative position bias computed once per stack and added to every layer's self-attention
scores), an optional norm after the embeddings, its blocks and, for pre-norm models, a final norm.

Decoding: `encode` once, then `decode` with a cache from `init_cache`. The first `decode` call
(given the memory) computes every layer's cross-attention keys and values into `MemoryCache`s,
which later calls (memory=None) only read; self-attention keys and values go into `KVCache`s at
their positions. The cache is a plain pytree, so it is a `lax.scan` carry and beam search reorders
it along its batch axis (`jaxformer.nn.kv_cache.reorder`).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.models.encoder_decoder.config import EncoderDecoderConfig
from jaxformer.models.layers import ACTIVATION_AXES, run_layers, stacked_blocks
from jaxformer.models.output import ModelOutput
from jaxformer.nn import kv_cache
from jaxformer.nn.attention import Attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.dropout import dropout
from jaxformer.nn.embedding import Embed, LearnedPositions, padded
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.linear import Linear
from jaxformer.nn.norms import make_norm
from jaxformer.nn.params import normal, param, zeros
from jaxformer.nn.positions import sinusoidal
from jaxformer.nn.relative_position import RelativePositionBias
from jaxformer.nn.sharding import constrain


def _inits(c: EncoderDecoderConfig, stack: str = "encoder") -> dict:
    """Initializers by role, for the blocks of `stack`. "t5" follows Mesh TensorFlow (as HF's T5
    `_init_weights` with factor 1): unit-variance embeddings, and projections scaled by their
    fan-in; the query's extra head_dim^-0.5 is where T5 puts the score scaling it leaves out of
    attention."""
    if c.init == "t5":
        d, hd = c.d_model, c.stack_head_size(stack)
        h, f = c.stack_heads(stack), c.stack_mlp_dim(stack)
        return dict(embed=1.0, head=1.0, query=(d * hd) ** -0.5, kv=d ** -0.5, out=(h * hd) ** -0.5,
                    up=d ** -0.5, down=f ** -0.5, bias_table=d ** -0.5)
    # A table scaled by sqrt(d) on the way in starts at d^-0.5 (2017; fairseq, tensor2tensor).
    embed = c.d_model ** -0.5 if c.scale_embedding else c.init_std
    std = c.init_std
    return dict(embed=embed, head=std, query=std, kv=std, out=std, up=std, down=std, bias_table=std)


def make_block(c: EncoderDecoderConfig, rngs: nnx.Rngs, *, decoder: bool) -> TransformerBlock:
    """One layer of the decoder's or the encoder's stack, with that stack's heads and width (the
    cross-attention too has the decoder's heads)."""
    stack = "decoder" if decoder else "encoder"
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    inits = _inits(c, stack)
    scale = None if c.attention_scale else 1.0
    heads, head_size = c.stack_heads(stack), c.stack_head_size(stack)

    def attention(cross: bool) -> Attention:
        attn = Attention(c.d_model, heads, head_dim=head_size, use_bias=c.use_bias,
                         causal=decoder and not cross, cross=cross, position="none",
                         implementation=c.attention_impl, scale=scale, init=normal(inits["kv"]),
                         out_init=normal(inits["out"]), dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)
        if inits["query"] != inits["kv"]:
            attn.query.kernel[...] = attn.query.kernel[...] * (inits["query"] / inits["kv"])
        return attn

    def norm():
        return make_norm(c.norm, c.d_model, eps=c.norm_eps, use_bias=c.use_bias,
                         param_dtype=param_dtype, rngs=rngs)

    feed_forward = FeedForward(c.d_model, c.stack_mlp_dim(stack), activation=c.activation,
                               use_bias=c.use_bias, init=normal(inits["up"]),
                               out_init=normal(inits["down"]), dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
    sublayers = {"attention": (attention(False), norm())}
    if decoder:
        sublayers["cross_attention"] = (attention(True), norm())
    sublayers["feed_forward"] = (feed_forward, norm())
    return TransformerBlock(sublayers, norm_position=c.norm_position, dropout_rate=c.dropout)


class Stack(nnx.Module):
    """The encoder's or the decoder's stack, from embedded tokens to its output."""

    def __init__(self, config: EncoderDecoderConfig, *, decoder: bool, rngs: nnx.Rngs):
        c = self.config = config
        self.is_decoder = decoder
        stack = "decoder" if decoder else "encoder"
        self.num_layers = c.decoder_layers if decoder else c.encoder_layers
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.position_embedding = (
            LearnedPositions(c.max_seq_len + c.position_offset, c.d_model, init_std=c.init_std,
                             dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            if c.position == "learned" else None)
        self.relative_bias = (
            RelativePositionBias(c.stack_heads(stack), bidirectional=not decoder,
                                 num_buckets=c.relative_buckets,
                                 max_distance=c.relative_max_distance,
                                 init=normal(_inits(c, stack)["bias_table"]),
                                 param_dtype=param_dtype,
                                 rngs=rngs)
            if c.position == "relative" else None)
        norm = lambda: make_norm(c.norm, c.d_model, eps=c.norm_eps, use_bias=c.use_bias,
                                 param_dtype=param_dtype, rngs=rngs)
        self.embedding_norm = norm() if c.embedding_norm else None
        make = lambda r: make_block(c, r, decoder=decoder)
        self.layers = (stacked_blocks(make, self.num_layers, rngs) if c.scan_layers
                       else nnx.List([make(rngs) for _ in range(self.num_layers)]))
        # Post-norm blocks end in a norm already; pre-norm stacks need one at the end.
        self.final_norm = norm() if c.norm_position == "pre" else None

    def __call__(self, x, positions, segment_ids, *, memory=None, memory_segment_ids=None,
                 cache=None, dropout_rng=None):
        """x: embedded tokens [batch, time, embed]; positions, segment_ids: [batch, time].
        Returns (output [batch, time, embed], cache, aux)."""
        c = self.config
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions + c.position_offset)
        elif c.position.startswith("sinusoidal"):
            x = x + sinusoidal(positions, c.d_model,
                               interleave=c.position == "sinusoidal").astype(x.dtype)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        keys = (jax.random.split(dropout_rng, self.num_layers + 1) if dropout_rng is not None
                else None)
        x = dropout(x, c.dropout, None if keys is None else keys[-1])
        x = constrain(x, ACTIVATION_AXES)

        bias = None
        if self.relative_bias is not None:
            # Keys are the cache's slots while decoding (slot = position), else the tokens.
            k_positions = positions if cache is None else jnp.broadcast_to(
                jnp.arange(_cache_length(cache), dtype=jnp.int32), (x.shape[0], _cache_length(cache)))
            bias = self.relative_bias(positions, k_positions)
        ctx = BlockContext(positions=positions, segment_ids=segment_ids, memory=memory,
                           memory_segment_ids=memory_segment_ids, attention_bias=bias)
        x, cache, aux = run_layers(self.layers, x, ctx, cache,
                                   None if keys is None else keys[:self.num_layers],
                                   scan=c.scan_layers, remat=c.remat)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, cache, aux


def _cache_length(cache) -> int:
    """Slots of the self-attention caches (per-layer list, or one stacked dict)."""
    layer = cache if isinstance(cache, dict) else cache[0]
    return layer["attention"].segment_ids.shape[-1]


def _default_positions(tokens: jax.Array) -> jax.Array:
    batch, time = tokens.shape
    return jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))


def decoder_positions_and_segments(decoder_tokens: jax.Array, positions: jax.Array | None,
                                   segment_ids: jax.Array | None, cache):
    """The decoder's positions and segment ids where a caller left them out: 0, 1, ... (not
    allowed with a cache, whose positions continue from what it holds) and, with a cache, one
    segment for every token."""
    if positions is None:
        if cache is not None:
            raise ValueError("decoding with a cache needs explicit decoder_positions")
        positions = _default_positions(decoder_tokens)
    if cache is not None and segment_ids is None:
        segment_ids = jnp.ones(decoder_tokens.shape, jnp.int32)
    return positions, segment_ids


class EncoderDecoder(nnx.Module):
    def __init__(self, config: EncoderDecoderConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        inits = _inits(c)
        self.embed = Embed(c.vocab_size, c.d_model, padded_size=c.padded_vocab_size,
                           init_std=inits["embed"], dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder = Stack(c, decoder=False, rngs=rngs)
        self.decoder = Stack(c, decoder=True, rngs=rngs)
        self.lm_head = (None if c.tie_embeddings else
                        Linear(c.d_model, c.padded_vocab_size, in_axes=("embed",), out_axes=("vocab",),
                               use_bias=False, init=padded(normal(inits["head"]), c.vocab_size, 1),
                               dtype=dtype, param_dtype=param_dtype, out_dtype=jnp.float32, rngs=rngs))
        self.final_logits_bias = (param(rngs.params(), zeros, (c.padded_vocab_size,), ("vocab",),
                                        param_dtype) if c.final_logits_bias else None)

    def _embed(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens)
        return x * math.sqrt(self.config.d_model) if self.config.scale_embedding else x

    def encode(self, tokens: jax.Array, segment_ids: jax.Array | None = None,
               positions: jax.Array | None = None, *, dropout_rng: jax.Array | None = None
               ) -> tuple[jax.Array, dict]:
        """tokens [batch, source_time] -> (memory [batch, source_time, embed], aux). segment_ids:
        0 marks padding, packed sources get 1, 2, ...; positions default to 0, 1, ..."""
        positions = _default_positions(tokens) if positions is None else positions
        memory, _, aux = self.encoder(self._embed(tokens), positions, segment_ids,
                                      dropout_rng=dropout_rng)
        return memory, aux

    def decode(self, decoder_tokens: jax.Array, memory: jax.Array | None = None,
               memory_segment_ids: jax.Array | None = None, *,
               decoder_positions: jax.Array | None = None,
               decoder_segment_ids: jax.Array | None = None, cache=None,
               dropout_rng: jax.Array | None = None) -> ModelOutput:
        """The decoder over `decoder_tokens` [batch, time] attending to `memory` (the encoder's
        output; None while decoding with a filled cache). decoder_positions are required with a
        cache. Returns a ModelOutput: logits [batch, time, vocab] float32, cache, aux,
        last_hidden_state (the decoder's output)."""
        c = self.config
        decoder_positions, decoder_segment_ids = decoder_positions_and_segments(
            decoder_tokens, decoder_positions, decoder_segment_ids, cache)
        x, cache, aux = self.decoder(self._embed(decoder_tokens), decoder_positions,
                                     decoder_segment_ids, memory=memory,
                                     memory_segment_ids=memory_segment_ids, cache=cache,
                                     dropout_rng=dropout_rng)
        hidden = x
        if c.scale_decoder_output:
            x = x * (c.d_model ** -0.5)
        logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)[..., :c.vocab_size]
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias[...][:c.vocab_size].astype(jnp.float32)
        return ModelOutput(logits=constrain(logits, ("batch", "length", "vocab")), cache=cache,
                           aux=aux, last_hidden_state=hidden)

    def __call__(self, tokens: jax.Array, decoder_tokens: jax.Array,
                 segment_ids: jax.Array | None = None,
                 decoder_segment_ids: jax.Array | None = None, *,
                 positions: jax.Array | None = None, decoder_positions: jax.Array | None = None,
                 cache=None, dropout_rng: jax.Array | None = None) -> ModelOutput:
        """Teacher forcing: source `tokens` [batch, source_time] and decoder inputs
        `decoder_tokens` [batch, target_time] (the target shifted right behind
        `decoder_start_token_id`). Segment ids: 0 is padding; packed pairs share their id on
        both sides, so each target attends only to its own source. Returns a ModelOutput with
        logits [batch, target_time, vocab] and encoder_last_hidden_state."""
        keys = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        memory, encoder_aux = self.encode(tokens, segment_ids, positions, dropout_rng=keys[0])
        out = self.decode(decoder_tokens, memory, segment_ids, decoder_positions=decoder_positions,
                          decoder_segment_ids=decoder_segment_ids, cache=cache,
                          dropout_rng=keys[1])
        aux = {name: encoder_aux.get(name, 0.0) + out.aux.get(name, 0.0)
               for name in {**encoder_aux, **out.aux}}
        return out.replace(aux=aux, encoder_last_hidden_state=memory)

    def init_cache(self, batch: int, max_len: int, memory_len: int = 1):
        """An empty decoding cache for `batch` rows (see `init_decoder_cache`)."""
        return init_decoder_cache(self.config, batch, max_len, memory_len)


def init_decoder_cache(c: EncoderDecoderConfig, batch: int, max_len: int, memory_len: int = 1):
    """An empty cache for the decoder stack of `c`: per decoder layer a KVCache of `max_len` slots
    ("attention") and a MemoryCache for a memory of `memory_len` tokens ("cross_attention",
    filled by the first `decode` given the memory, whose length then wins), both with the
    decoder's heads. A list per layer, or with `scan_layers` one dict stacked on a leading
    [decoder_layers] axis."""
    dtype = jnp.dtype(c.dtype)
    heads, head_size = c.stack_heads("decoder"), c.stack_head_size("decoder")
    caches = [{"attention": kv_cache.init_layer_cache(batch, max_len, heads, head_size, dtype),
               "cross_attention": kv_cache.init_memory_cache(batch, memory_len, heads, head_size,
                                                            dtype)}
              for _ in range(c.decoder_layers)]
    return jax.tree.map(lambda *a: jnp.stack(a), *caches) if c.scan_layers else caches
