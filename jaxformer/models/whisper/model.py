"""Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision"), as
HF's `WhisperForConditionalGeneration` computes it: an audio encoder over log-mel features and a
text decoder with cross-attention.

    features [B, mels, 2 Ts] -> conv1 (kernel 3, stride 1, padding 1) -> GELU
                             -> conv2 (kernel 3, stride 2, padding 1) -> GELU   [B, Ts, D]
                             -> + fixed sinusoidal positions -> Le pre-norm blocks -> LayerNorm
                             -> memory [B, Ts, D]
    tokens [B, T] -> embed + learned positions -> Ld pre-norm blocks (causal self-attention,
                     cross-attention over the memory, feed-forward) -> LayerNorm
                  -> embedding transposed (tied) -> logits [B, T, V]

The blocks are the encoder-decoder family's (`make_block`; the decoder is its `Stack`), so
cross-attention, its `MemoryCache`, scanning and rematerialisation are those of T5 and BART. As in
Whisper, attention keys have no bias (queries, values and outputs do): `drop_key_biases` removes
them from the blocks after they are built.

A convolution of kernel 3 is a `Linear` over each frame's window of 3 frames ([3, channels] in,
D out), so its kernel is named and sharded like any other ([3, in, out]; HF's Conv1d weight is
[out, in, 3]).

The encoder's position table is held as a parameter (`encoder/positions`, so HF checkpoints load
exactly) but frozen: its gradient is stopped, and its name matches neither weight-decay pattern
("*kernel", "*embedding"), so the optimizer leaves it as it was. It starts as Whisper's sinusoids:
sines of position x 10000^(-i / (D/2 - 1)) for i < D/2, then the cosines.

Decoding: `encode` once, then `decode` with a cache from `init_cache`: the first `decode` call
(given the memory) writes every layer's cross-attention keys and values into the cache, later
calls only read them. `jaxformer.generate.generate` / `beam_search` take features in place of
prompts for this family.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.models.encoder_decoder.model import (Stack, decoder_positions_and_segments,
                                                    init_decoder_cache, make_block)
from jaxformer.models.layers import ACTIVATION_AXES, run_layers, stacked_blocks
from jaxformer.models.output import ModelOutput
from jaxformer.models.whisper.config import WhisperConfig
from jaxformer.nn.attention import Attention
from jaxformer.nn.dropout import dropout
from jaxformer.nn.context import BlockContext
from jaxformer.nn.embedding import Embed
from jaxformer.nn.feedforward import ACTIVATIONS
from jaxformer.nn.linear import Linear
from jaxformer.nn.norms import make_norm
from jaxformer.nn.params import normal, param
from jaxformer.nn.sharding import constrain


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's encoder positions [length, channels] float32: sin | cos halves, timescales
    geometric from 1 to max_timescale over channels / 2 - 1 steps, computed in float32 steps as
    the reference does."""
    half = channels // 2
    increment = np.float32(math.log(max_timescale) / (half - 1))
    inv_timescales = np.exp(-increment * np.arange(half, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def drop_key_biases(module: nnx.Module) -> None:
    """Remove the key projection's bias from every attention inside `module` (Whisper's k_proj
    has none). A key bias adds the same q.b to every score of a query, which softmax ignores, so
    this changes no output; it removes parameters HF does not have."""
    for _, m in nnx.iter_modules(module):
        if isinstance(m, Attention):
            m.key.bias = None


def conv_windows(x: jax.Array, stride: int) -> jax.Array:
    """[B, T, C] -> [B, T', 3, C]: each output frame's 3 input frames (zero padding 1 at both
    ends), T' = (T - 1) // stride + 1, as a kernel-3, padding-1 convolution sees them."""
    frames = (x.shape[1] - 1) // stride + 1
    padded = jnp.pad(x, [(0, 0), (1, 1), (0, 0)])
    return jnp.stack([padded[:, k:k + stride * (frames - 1) + 1:stride] for k in range(3)], axis=2)


class AudioEncoder(nnx.Module):
    """log-mel features [B, mels, frames] -> memory [B, frames / 2, D]."""

    def __init__(self, config: WhisperConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = self.stack_config = config.stack_config("encoder")
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        D, init = config.d_model, normal(config.init_std)
        common = dict(init=init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = Linear((3, config.num_mel_bins), D, in_axes=(None, None), out_axes=("embed",),
                            **common)
        # D in and D out: one logical axis may name only one dimension, so the input side is
        # left unsharded, as conv1's is.
        self.conv2 = Linear((3, D), D, in_axes=(None, None), out_axes=("embed",), **common)
        table = sinusoids(config.max_source_positions, D)
        self.positions = param(rngs.params(), lambda *_: jnp.asarray(table, param_dtype),
                               table.shape, ("position", "embed"), param_dtype)

        def make(r):
            block = make_block(c, r, decoder=False)
            drop_key_biases(block)
            return block

        self.layers = (stacked_blocks(make, c.encoder_layers, rngs) if c.scan_layers
                       else nnx.List([make(rngs) for _ in range(c.encoder_layers)]))
        self.final_norm = make_norm("layernorm", D, eps=c.norm_eps, param_dtype=param_dtype,
                                    rngs=rngs)

    def __call__(self, features: jax.Array, *, dropout_rng: jax.Array | None = None) -> jax.Array:
        config, c = self.config, self.stack_config
        if features.ndim != 3 or features.shape[1] != config.num_mel_bins:
            raise ValueError(f"Whisper's encoder takes log-mel features [batch, "
                             f"{config.num_mel_bins}, {config.num_frames}], got shape "
                             f"{tuple(features.shape)}")
        if features.shape[2] != config.num_frames:
            raise ValueError(f"Whisper's encoder needs {config.num_frames} frames "
                             f"(2 x max_source_positions={config.max_source_positions}), got "
                             f"{features.shape[2]}: pad or cut the audio to "
                             f"{config.num_frames // 100} s")
        act = ACTIVATIONS[config.activation]
        x = jnp.swapaxes(features.astype(jnp.dtype(c.dtype)), 1, 2)  # [B, frames, mels]
        x = act(self.conv1(conv_windows(x, 1)))
        x = act(self.conv2(conv_windows(x, 2)))  # [B, Ts, D]
        x = x + jax.lax.stop_gradient(self.positions[...]).astype(x.dtype)
        keys = (jax.random.split(dropout_rng, c.encoder_layers + 1) if dropout_rng is not None
                else None)
        x = dropout(x, c.dropout, None if keys is None else keys[-1])
        x = constrain(x, ACTIVATION_AXES)
        batch, time = x.shape[:2]
        positions = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))
        ctx = BlockContext(positions=positions, segment_ids=None)
        x, _, _ = run_layers(self.layers, x, ctx, None,
                             None if keys is None else keys[:c.encoder_layers],
                             scan=c.scan_layers, remat=c.remat)
        return self.final_norm(x)


class Whisper(nnx.Module):
    def __init__(self, config: WhisperConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = self.text_config = config.stack_config("decoder")
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.encoder = AudioEncoder(config, rngs=rngs)
        self.embed = Embed(c.vocab_size, c.d_model, padded_size=c.padded_vocab_size,
                           init_std=config.init_std, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)
        self.decoder = Stack(c, decoder=True, rngs=rngs)
        drop_key_biases(self.decoder)

    def encode(self, features: jax.Array, *, dropout_rng: jax.Array | None = None) -> jax.Array:
        """features float32 [batch, num_mel_bins, 2 x max_source_positions] (as
        `jaxformer.data.audio.log_mel_spectrogram` or HF's WhisperFeatureExtractor gives them)
        -> memory [batch, max_source_positions, d_model]. A wrong frame count is a ValueError."""
        return self.encoder(features, dropout_rng=dropout_rng)

    def decode(self, decoder_tokens: jax.Array, memory: jax.Array | None = None, *,
               decoder_positions: jax.Array | None = None,
               decoder_segment_ids: jax.Array | None = None, cache=None,
               dropout_rng: jax.Array | None = None) -> ModelOutput:
        """The decoder over `decoder_tokens` [batch, time] attending to `memory` (from `encode`;
        None while decoding with a filled cache). decoder_positions are required with a cache.
        Returns a ModelOutput: logits [batch, time, vocab] float32, cache, aux, last_hidden_state."""
        decoder_positions, decoder_segment_ids = decoder_positions_and_segments(
            decoder_tokens, decoder_positions, decoder_segment_ids, cache)
        x, cache, aux = self.decoder(self.embed(decoder_tokens), decoder_positions,
                                     decoder_segment_ids, memory=memory, cache=cache,
                                     dropout_rng=dropout_rng)
        logits = self.embed.attend(x)
        return ModelOutput(logits=constrain(logits, ("batch", "length", "vocab")), cache=cache,
                           aux=aux, last_hidden_state=x)

    def __call__(self, features: jax.Array, decoder_tokens: jax.Array,
                 decoder_segment_ids: jax.Array | None = None, *,
                 decoder_positions: jax.Array | None = None, cache=None,
                 dropout_rng: jax.Array | None = None) -> ModelOutput:
        """Teacher forcing: log-mel `features` [batch, mels, frames] and the decoder inputs
        `decoder_tokens` [batch, time] (<|startoftranscript|>, the task tokens, the text);
        segment id 0 marks padding. Returns a ModelOutput with logits [batch, time, vocab] and
        encoder_last_hidden_state (the memory)."""
        keys = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        memory = self.encode(features, dropout_rng=keys[0])
        out = self.decode(decoder_tokens, memory, decoder_positions=decoder_positions,
                          decoder_segment_ids=decoder_segment_ids, cache=cache,
                          dropout_rng=keys[1])
        return out.replace(encoder_last_hidden_state=memory)

    def init_cache(self, batch: int, max_len: int, memory_len: int | None = None):
        """An empty decoding cache for `batch` rows: `max_len` self-attention slots per decoder
        layer and room for a memory of `memory_len` states (default max_source_positions)."""
        memory_len = self.config.max_source_positions if memory_len is None else memory_len
        return init_decoder_cache(self.text_config, batch, max_len, memory_len)
