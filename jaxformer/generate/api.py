"""`generate`: lists of token ids in, lists of new token ids out, through the compiled loop."""

import dataclasses
import numbers
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.errors import UserError
from jaxformer.generate.adapters import check_adapter_ids
from jaxformer.generate.controls import decoder_controls
from jaxformer.generate.loop import DecodeOutput, DecodeSettings, compiled_decode_fn, token_sink
from jaxformer.generate.steps import steps_for

TokenCallback = Callable[[int, np.ndarray, np.ndarray], None]
Seed = int | Sequence[int]


def row_keys(seed: Seed, batch: int) -> jax.Array:
    """[batch] keys: row i's is `jax.random.key(seed[i])` for a list of seeds, and
    `jax.random.key(seed + i)` for one int seed (as if seed=[seed, seed + 1, ...] were given).
    Seeds are taken modulo 2**32."""
    if isinstance(seed, numbers.Integral):
        seeds = [int(seed) + i for i in range(batch)]
    else:
        seeds = list(seed)
        if len(seeds) != batch or not all(isinstance(s, numbers.Integral) for s in seeds):
            raise UserError(f"seed must be an int or a list of {batch} ints (one per prompt), "
                            f"got {seed!r}")
    return _keys(np.asarray([int(s) % 2**32 for s in seeds], np.uint32))


_keys = jax.jit(jax.vmap(jax.random.key))  # one dispatch for the whole batch


def make_settings(max_new_tokens: int, *, temperature=1.0, top_k=None, top_p=None,
                  stop_tokens=None, pad_id: int = 0, stream: bool = False,
                  return_logits: bool = False) -> DecodeSettings:
    """Checked, normalised settings (UserError naming the bad value)."""
    temperature = float(temperature)
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None:
        if int(top_k) != top_k or top_k < 1:
            raise UserError(f"top_k must be a positive integer, got {top_k}")
        top_k = int(top_k)
    if top_p is not None:
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1], got {top_p}")
        if top_p == 1.0:
            top_p = None  # keeps everything: leave the sort out of the program
    if temperature == 0.0:
        top_k = top_p = None  # greedy ignores them; one compiled program serves all
    stops = tuple(sorted({int(t) for t in (stop_tokens or ())}))
    return DecodeSettings(max_new_tokens=int(max_new_tokens), temperature=temperature, top_k=top_k,
                          top_p=top_p, stop_tokens=stops, pad_id=int(pad_id), stream=stream,
                          return_logits=return_logits)


def decode(model: nnx.Module, prompts: list[list[int]], settings: DecodeSettings, *, seed: Seed = 0,
           on_tokens: TokenCallback | None = None, timings: dict | None = None,
           adapter_ids: list[int] | None = None, decoder_prefix=None, suppress_tokens=None,
           begin_suppress_tokens=None) -> DecodeOutput:
    """Run the compiled loop over `prompts` (lists of token ids, any lengths; for an image-to-text
    model, images [batch, height, width, channels]; for Whisper, log-mel features [batch, mel
    bins, frames]). `seed`: see `row_keys` (row i's tokens are those of prompt i alone with row
    i's seed). `adapter_ids`, `decoder_prefix`, `suppress_tokens`, `begin_suppress_tokens`: see
    `generate`.

    on_tokens(step, tokens [batch], valid [batch]) is called from inside the loop as each step's
    tokens are produced (needs `settings.stream`). `timings`, if given, is filled with
    "compile_s" (0 when the program was cached), "run_start" (`time.perf_counter()` when the
    compiled program was dispatched) and "total_s" (prefill + decode, no compile).
    `adapter_ids`: one LoRA adapter per prompt for a model with stacked adapters
    (`jaxformer.generate.adapters`; -1 is the base model).
    """
    config = model.config
    if not hasattr(model, "init_cache"):
        raise UserError(f"{type(model).__name__} ({config.family} family) has no decoding cache: "
                        f"it does not generate text")
    io = steps_for(model)
    io.check_request(prompts, settings.max_new_tokens, config)
    if settings.top_k is not None and settings.top_k > config.vocab_size:
        settings = dataclasses.replace(settings, top_k=None)  # keeps everything
    if on_tokens is not None and not settings.stream:
        raise ValueError("on_tokens needs DecodeSettings(stream=True)")
    graphdef, state = nnx.split(model)
    tokens, lengths = io.inputs(prompts, config, settings.pad_id)
    rows = None if adapter_ids is None else check_adapter_ids(model, adapter_ids, len(prompts))
    controls = decoder_controls(config, len(tokens), settings.max_new_tokens,
                                decoder_prefix=decoder_prefix, suppress_tokens=suppress_tokens,
                                begin_suppress_tokens=begin_suppress_tokens).arrays()
    # Traced: other values reuse the compiled program. Unused by a greedy program.
    args = (tokens, lengths, row_keys(seed, len(tokens)),
            jnp.float32(settings.temperature), jnp.float32(settings.top_p or 1.0))
    if controls is not None:
        args += (rows, controls)
    elif rows is not None:
        args += (rows,)

    start = time.perf_counter()
    fn, fresh = compiled_decode_fn(graphdef, settings, state, *args)
    compiled_at = time.perf_counter()
    if on_tokens is not None:
        with token_sink(on_tokens):
            out = jax.block_until_ready(fn(state, *args))
    else:
        out = jax.block_until_ready(fn(state, *args))
    finished = time.perf_counter()
    if timings is not None:
        timings["compile_s"] = compiled_at - start if fresh else 0.0
        timings["run_start"] = compiled_at
        timings["total_s"] = finished - compiled_at
    new_tokens, num_tokens, logits = out
    return DecodeOutput(np.asarray(new_tokens), np.asarray(num_tokens),
                        None if logits is None else np.asarray(logits))


def generate(model: nnx.Module, prompts: list[list[int]], max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: Seed = 0, stop_tokens: list[int] | None = None,
             on_tokens: TokenCallback | None = None, timings: dict | None = None,
             adapter_ids: list[int] | None = None, decoder_prefix=None, suppress_tokens=None,
             begin_suppress_tokens=None) -> list[list[int]]:
    """Continue each prompt (a list of token ids) by up to `max_new_tokens` tokens. For an
    encoder-decoder the prompts are the encoder's inputs and the new tokens are the decoder's; for
    an image-to-text model (`vision_encoder_decoder`) they are images, an array [batch, height,
    width, channels] (normalised as in training), and the new tokens are their captions; for
    Whisper they are log-mel features, an array [batch, mel bins, frames]
    (`jaxformer.data.audio.log_mel_spectrogram`), and the new tokens are the transcripts.

    An encoder-decoder's decoder starts from `decoder_start_token_id`, or from `decoder_prefix`
    (one list of token ids for every input, or one list per input, all of one length; Whisper:
    <|startoftranscript|>, language, task, <|notimestamps|>); the new tokens follow it.
    `suppress_tokens` are never produced, `begin_suppress_tokens` not as the first new token
    (their logits are set to -inf, as HF's logits processors of those names do).

    temperature 0 is greedy; otherwise temperature, top-k and top-p (nucleus) are applied in that
    order and a token is drawn. Each row has its own random stream: with `seed` a list, row i uses
    seed[i]; with an int, row i uses seed + i. Either way row i gets exactly the tokens its prompt
    would get alone with its seed (so identical prompts under an int seed continue differently),
    and the same seeds give the same tokens. Changing the temperature or top-p (between values in
    (0, 1)) does not recompile. A row that produces one of `stop_tokens` ends there: its list ends
    with that token. Prompts may have different lengths. `on_tokens(step, tokens, valid)` streams
    each step's tokens as they are produced (see `decode`). `adapter_ids` gives each prompt its
    own LoRA adapter of a model that stacks several (`jaxformer.generate.adapters.serve_adapters`).

    Returns the new tokens of each prompt. Raises UserError for a request the model cannot serve
    (an empty prompt, a token outside the vocabulary, prompt + new tokens beyond the context).
    """
    settings = make_settings(max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             stop_tokens=stop_tokens, stream=on_tokens is not None)
    out = decode(model, prompts if hasattr(prompts, "shape") else list(prompts), settings,
                 seed=seed, on_tokens=on_tokens, timings=timings, adapter_ids=adapter_ids,
                 decoder_prefix=decoder_prefix, suppress_tokens=suppress_tokens,
                 begin_suppress_tokens=begin_suppress_tokens)
    return [row[:n].tolist() for row, n in zip(out.tokens, out.num_tokens)]
