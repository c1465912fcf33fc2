"""How the decoding loops (sampling and beam search) drive a model: a prefill, then one-token
steps over a cache. One small interface per kind of model, so the loops never ask which it is.

    decoder-only:    the prompt is the start of the sequence. Prefill runs the padded prompts
                     through the model into a KV cache; row i's first new token comes from the
                     logits at its last prompt token and is fed back at position len_i.
    encoder-decoder: the prompt is the encoder's input. Prefill encodes it once, then runs the
                     decoder on its prefix, which also computes every layer's cross-attention keys
                     and values into the cache: `decoder_start_token_id` at position 0, or a
                     given prefix of P tokens [batch, P] at positions 0 .. P - 1 (Whisper's
                     <|startoftranscript|>, language, task, ...); new token t is fed back at
                     position t + P. The memory is never recomputed.
    image to text:   as the encoder-decoder, with an image [height, width, channels] for each
                     prompt: the encoder reads its patches once.
    speech to text:  as the encoder-decoder, with log-mel features [mel bins, frames] for each
                     prompt (Whisper).

What the encoder reads is the config's `encoder_input` class attribute (`ModelConfig`): "tokens"
(lists of token ids), "images" or "features" (arrays, batched).

    steps = steps_for(model)
    tokens, lengths = steps.inputs(prompts, model.config, pad_id)
    logits, cache, first_position = steps.prefill(model, tokens, lengths, max_len, prefix)
    logits, cache = steps.step(model, token, positions, cache)
"""

import abc

import jax.numpy as jnp
import numpy as np

from jaxformer.errors import UserError
from jaxformer.generate.prompts import bucket_length, cache_length, check_request, pad_prompts


class TokenInputs:
    def inputs(self, prompts, config, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Checked prompts (lists of token ids) -> (tokens [batch, bucket] right-padded to their
        bucket, lengths [batch]): the arrays prefill takes."""
        bucket = bucket_length(max(len(p) for p in prompts), config.max_seq_len)
        return pad_prompts(prompts, bucket, pad_id)


class DecoderOnlySteps(TokenInputs):
    def check_request(self, prompts: list[list[int]], max_new_tokens: int, config, *,
                      cli: bool = False) -> None:
        check_request(prompts, max_new_tokens, vocab_size=config.vocab_size,
                      max_seq_len=config.max_seq_len, cli=cli)

    def cache_length(self, bucket: int, max_new_tokens: int, config, prefix_len: int = 0) -> int:
        return cache_length(bucket, max_new_tokens, config.max_seq_len)

    def prefill(self, model, tokens, lengths, max_len, prefix=None):
        """tokens [batch, bucket] right-padded, lengths [batch] -> (next-token logits
        [batch, vocab], cache, position of the first new token [batch]). A decoder-only model
        has no decoder prefix: its prompt is the whole beginning."""
        if prefix is not None:
            raise ValueError("a decoder-only model takes no decoder prefix: put it in the prompt")
        batch, bucket = tokens.shape
        cache = model.init_cache(batch, max_len)
        positions = jnp.broadcast_to(jnp.arange(bucket, dtype=jnp.int32), (batch, bucket))
        segment_ids = (positions < lengths[:, None]).astype(jnp.int32)  # padding: 0
        out = model(tokens, positions, segment_ids, cache)
        return out.logits[jnp.arange(batch), lengths - 1], out.cache, lengths

    def step(self, model, token, positions, cache):
        """token, positions: [batch] -> (logits [batch, vocab], cache)."""
        positions = positions[:, None]
        out = model(token[:, None], positions, jnp.ones_like(positions), cache)
        return out.logits[:, 0], out.cache


class EncoderDecoderSteps(TokenInputs):
    def check_request(self, prompts: list[list[int]], max_new_tokens: int, config, *,
                      cli: bool = False) -> None:
        """As `prompts.check_request`, flags named as the CLI's when `cli`."""
        new = "--max-new-tokens" if cli else "max_new_tokens"
        if not prompts:
            raise UserError("no prompts given: pass at least one source")
        if max_new_tokens < 1:
            raise UserError(f"{new} must be at least 1, got {max_new_tokens}")
        if max_new_tokens > config.max_seq_len:
            raise UserError(f"{max_new_tokens} new tokens were asked for, more than the decoder's "
                            f"{config.max_seq_len} positions: lower {new}")
        if not 0 <= config.decoder_start_token_id < config.vocab_size:
            raise UserError(f"the model's decoder_start_token_id {config.decoder_start_token_id} "
                            f"is outside its vocabulary [0, {config.vocab_size})")
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise UserError(f"source {i} is empty: give at least one token to encode")
            if len(prompt) > config.max_seq_len:
                raise UserError(f"source {i} has {len(prompt)} tokens, more than the model's "
                                f"{config.max_seq_len}: shorten it")
            bad = [t for t in prompt if not 0 <= int(t) < config.vocab_size]
            if bad:
                raise UserError(f"source {i} has token id {bad[0]} outside the vocabulary "
                                f"[0, {config.vocab_size}): check the tokenizer matches the model")

    def cache_length(self, bucket: int, max_new_tokens: int, config, prefix_len: int = 1) -> int:
        # Slots 0 .. P - 1 hold the decoder prefix (the start token alone: P = 1); new token t
        # (from 0) is fed at slot t + P, and the last one is never fed.
        return max_new_tokens + prefix_len - 1

    def prefill(self, model, tokens, lengths, max_len, prefix=None):
        batch, bucket = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(bucket, dtype=jnp.int32), (batch, bucket))
        segment_ids = (positions < lengths[:, None]).astype(jnp.int32)
        memory, _ = model.encode(tokens, segment_ids, positions)
        return decoder_prefill(model, memory, max_len, prefix, segment_ids)

    def step(self, model, token, positions, cache):
        out = model.decode(token[:, None], decoder_positions=positions[:, None], cache=cache)
        return out.logits[:, 0], out.cache


def decoder_prefill(model, memory, max_len: int, prefix=None, memory_segment_ids=None):
    """An encoder-decoder's first decoder call: the prefix [batch, P] (default: the start token
    alone) at positions 0 .. P - 1 over `memory`, filling a fresh cache. Returns (the logits after
    the prefix's last token [batch, vocab], cache, position of the first new token [batch])."""
    batch = memory.shape[0]
    if prefix is None:
        prefix = jnp.full((batch, 1), model.config.decoder_start_token_id, jnp.int32)
    length = prefix.shape[1]
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    cache = model.init_cache(batch, max_len, memory_len=memory.shape[1])
    extra = () if memory_segment_ids is None else (memory_segment_ids,)
    out = model.decode(prefix, memory, *extra, decoder_positions=positions, cache=cache)
    return out.logits[:, -1], out.cache, jnp.full((batch,), length, jnp.int32)


class ArrayToTextSteps(EncoderDecoderSteps, abc.ABC):
    """The prompts are one array for the batch, which the encoder reads whole (images, audio
    features): no padding, no lengths."""

    what = "arrays"

    def check_request(self, prompts, max_new_tokens: int, config, *, cli: bool = False) -> None:
        new = "--max-new-tokens" if cli else "max_new_tokens"
        if max_new_tokens < 1:
            raise UserError(f"{new} must be at least 1, got {max_new_tokens}")
        if max_new_tokens > config.max_seq_len:
            raise UserError(f"{max_new_tokens} new tokens were asked for, more than the decoder's "
                            f"{config.max_seq_len} positions: lower {new}")
        try:
            array = np.asarray(prompts, np.float32)
        except (TypeError, ValueError):
            raise UserError(f"this model takes {self.what} (float arrays of one shape), not token "
                            f"ids: pass one array for the batch") from None
        self.check_array(array, config)

    @abc.abstractmethod
    def check_array(self, array: np.ndarray, config) -> None:
        """Raise UserError for an array of the wrong shape for `config`'s encoder."""

    def inputs(self, prompts, config, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(the array float32 [batch, ...], lengths [batch]: unused, all 1)."""
        array = np.asarray(prompts, np.float32)
        return array, np.ones((len(array),), np.int32)

    def prefill(self, model, array, lengths, max_len, prefix=None):
        return decoder_prefill(model, model.encode(array), max_len, prefix)


class ImageToTextSteps(ArrayToTextSteps):
    """The prompts are images, [batch, height, width, channels] (or a list of [h, w, c])."""

    what = "images"

    def check_array(self, images: np.ndarray, config) -> None:
        channels, patch = config.encoder.num_channels, config.encoder.patch_size
        if images.ndim != 4 or images.shape[-1] != channels or not len(images):
            raise UserError(f"images must be an array [batch, height, width, {channels}] "
                            f"(NHWC), got shape {images.shape}")
        if images.shape[1] < patch or images.shape[2] < patch:
            raise UserError(f"images of {images.shape[1]}x{images.shape[2]} pixels hold no "
                            f"{patch}x{patch} patch: resize them to at least that")


class SpeechToTextSteps(ArrayToTextSteps):
    """The prompts are log-mel features, [batch, mel bins, frames] (Whisper: as
    `jaxformer.data.audio.log_mel_spectrogram` gives them)."""

    what = "log-mel features"

    def check_array(self, features: np.ndarray, config) -> None:
        shape = (config.num_mel_bins, config.num_frames)
        if features.ndim != 3 or features.shape[1:] != shape or not len(features):
            raise UserError(f"features must be an array [batch, {shape[0]}, {shape[1]}] (log-mel "
                            f"bins, frames: 30 s of audio through "
                            f"jaxformer.data.audio.log_mel_spectrogram), got shape "
                            f"{features.shape}")


def is_encoder_decoder(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


def encoder_input(model_or_config) -> str:
    """What a model's encoder reads: "tokens", "images" or "features" (`ModelConfig.encoder_input`)."""
    return getattr(model_or_config, "config", model_or_config).encoder_input


ARRAY_STEPS = {"images": ImageToTextSteps, "features": SpeechToTextSteps}


def steps_for(model) -> DecoderOnlySteps | EncoderDecoderSteps:
    kind = encoder_input(model)
    if kind in ARRAY_STEPS:
        return ARRAY_STEPS[kind]()
    return EncoderDecoderSteps() if is_encoder_decoder(model) else DecoderOnlySteps()
