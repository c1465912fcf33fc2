"""Beam search as one compiled program: fixed shapes, a `lax.while_loop` over new tokens, and the
cache reordered along its batch axis as beams are chosen. For decoder-only and encoder-decoder
models alike (the prefill and the step come from `steps.py`).

    from jaxformer.generate import beam_search
    best = beam_search(model, [[13, 7, 21]], max_new_tokens=32, num_beams=4, stop_tokens=[1])

The rules are HuggingFace transformers' (`GenerationMixin._beam_search`, 4.50+), so the same model
gives the same sequences:

- Each input keeps `num_beams` running beams, rows b * num_beams + k of the cache. At first only
  beam 0 is live (the others start at -1e9), so the beams do not all pick the same token.
- Each step adds the next token's log-probabilities to each beam's running sum and keeps the
  best K = max(2, 1 + number of stop tokens) * num_beams continuations over all beams, so that
  num_beams of them can continue even if the best ones all end.
- A continuation ends when its token is a stop token or it reaches `max_new_tokens`. Ended
  continuations among the best num_beams become finished hypotheses scored
  sum of log-probabilities / (new tokens, the stop token included) ** length_penalty;
  each input keeps its best num_beams of them. The best num_beams continuations that did not end
  run on.
- `early_stopping`: True stops adding hypotheses to an input once it has num_beams of them;
  False (HF's default) also stops when the best running beam, scored at its current length,
  cannot beat the worst finished hypothesis; "never" does the same with the best length a beam
  could still reach (`max_new_tokens`) when length_penalty > 0. The loop ends when no input can
  change any more.

An encoder-decoder may start its decoder from a prefix and suppress tokens
(`jaxformer.generate.controls`): suppressed tokens get log-probability -inf after the softmax, as
HF's logits processors set them.

Each input's answer is its best finished hypothesis. The same holds for `length_penalty`: > 0
favours longer sequences, < 0 shorter ones.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.errors import UserError
from jaxformer.generate.controls import decoder_controls, suppressed
from jaxformer.generate.steps import steps_for
from jaxformer.nn import kv_cache

NEG = np.float32(-1.0e9)  # HF's "impossible" score, added as it adds it (float32)


@dataclasses.dataclass(frozen=True)
class BeamSettings:
    """The static part of a beam-search request (hashable: it keys the compile cache)."""

    max_new_tokens: int
    num_beams: int = 4
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True | False | "never"
    stop_tokens: tuple[int, ...] = ()
    pad_id: int = 0  # fills each sequence after its stop token


@dataclasses.dataclass
class BeamOutput:
    tokens: np.ndarray  # [batch, max_new_tokens] int32: the best hypothesis, pad_id after its end
    num_tokens: np.ndarray  # [batch] int32: its new tokens, the stop token included
    scores: np.ndarray  # [batch] float32: its score (sum of log-probs / length ** length_penalty)


def make_settings(max_new_tokens: int, *, num_beams: int = 4, length_penalty: float = 1.0,
                  early_stopping: bool | str = False, stop_tokens=None,
                  pad_id: int = 0) -> BeamSettings:
    """Checked settings (UserError naming the bad value)."""
    if int(num_beams) != num_beams or num_beams < 1:
        raise UserError(f"num_beams must be a positive integer, got {num_beams}")
    if early_stopping not in (True, False, "never"):
        raise UserError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    return BeamSettings(max_new_tokens=int(max_new_tokens), num_beams=int(num_beams),
                        length_penalty=float(length_penalty), early_stopping=early_stopping,
                        stop_tokens=tuple(sorted({int(t) for t in (stop_tokens or ())})),
                        pad_id=int(pad_id))


def _gather(x, indices):
    """x [batch, beams, ...] -> x[b, indices[b, j], ...]: [batch, j, ...]."""
    return jnp.take_along_axis(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1)


def rule_arguments(settings: BeamSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The length penalty and early stopping as arguments of the compiled program (so other
    values do not recompile): what a hypothesis of n = 1..new tokens is divided by
    ([new] float32: n ** length_penalty, in double then float32 as HF computes it); what the best
    running beam at step n is divided by when checking whether it can still win ([new] float32:
    the same, or new ** length_penalty for early_stopping="never" with length_penalty > 0); and
    whether an input stops once it has num_beams hypotheses (bool: early_stopping=True)."""
    s, new = settings, settings.max_new_tokens
    penalty = np.asarray([n ** s.length_penalty for n in range(1, new + 1)], np.float32)
    best_length = ((np.full(new, new) if s.early_stopping == "never" and s.length_penalty > 0
                    else np.arange(1, new + 1)) ** s.length_penalty).astype(np.float32)
    return penalty, best_length, np.bool_(s.early_stopping is True)


def make_beam_fn(graphdef: nnx.GraphDef, settings: BeamSettings):
    """run(state, tokens [batch, bucket], lengths [batch], *rule_arguments(settings), controls=None)
    -> (tokens, num_tokens, scores) of each input's best hypothesis. Pure; not jitted; reads
    `settings` but its length penalty and early stopping. `controls`: the arrays of a
    `DecoderControls` (prefix [batch, P], suppressed tokens), or None."""
    s = settings
    beams, new = s.num_beams, s.max_new_tokens
    keep = max(2, 1 + len(s.stop_tokens)) * beams
    stops = np.asarray(s.stop_tokens or (-1,), np.int32)
    top_num_beams = (np.arange(keep) < beams)[None, :]

    def run(state, tokens, lengths, penalty, best_length, stop_when_full, controls=None):
        model = nnx.merge(graphdef, state)
        io = steps_for(model)
        batch, bucket = tokens.shape[:2]  # images: [batch, height, ...] (their steps ignore bucket)
        controls = controls or {}
        prefix = controls.get("prefix")
        max_len = io.cache_length(bucket, new, model.config,
                                  *(() if prefix is None else (prefix.shape[1],)))
        logits, cache, first_position = io.prefill(model, tokens, lengths, max_len, prefix)
        # Prefill once per input, then copy its cache rows to each of its beams.
        cache = kv_cache.reorder(cache, jnp.repeat(jnp.arange(batch), beams))
        logits = jnp.repeat(logits, beams, axis=0)
        first_position = jnp.repeat(first_position, beams)

        carry = dict(
            t=jnp.int32(0), logits=logits, cache=cache, go=jnp.bool_(True),
            running=jnp.full((batch, beams, new), s.pad_id, jnp.int32),
            running_scores=jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(NEG),
            finished=jnp.full((batch, beams, new), s.pad_id, jnp.int32),
            finished_scores=jnp.full((batch, beams), NEG, jnp.float32),
            is_finished=jnp.zeros((batch, beams), bool),
            improvable=jnp.ones((batch,), bool))

        def body(c):
            t = c["t"]
            vocab = c["logits"].shape[-1]
            log_probs = jax.nn.log_softmax(c["logits"].astype(jnp.float32), axis=-1)
            if controls:  # the first step (t = 0) also suppresses the begin tokens
                log_probs = jax.lax.cond(t == 0, lambda x: suppressed(x, controls, True),
                                         lambda x: suppressed(x, controls, False), log_probs)
            log_probs = log_probs.reshape(batch, beams, vocab) + c["running_scores"][:, :, None]
            top_scores, top_index = jax.lax.top_k(log_probs.reshape(batch, beams * vocab), keep)
            parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
            candidates = _gather(c["running"], parent).at[:, :, t].set(token)  # [batch, keep, new]
            ends = jnp.isin(token, stops) | (t + 1 >= new)

            # The best num_beams continuations that did not end run on.
            run_scores, run_index = jax.lax.top_k(top_scores + ends.astype(jnp.float32) * NEG, beams)
            running = _gather(candidates, run_index)
            parents = _gather(parent, run_index)

            # Ended continuations among the best num_beams compete for the finished slots.
            just_finished = ends & jnp.asarray(top_num_beams)
            scores = top_scores / penalty[t]
            full = jnp.all(c["is_finished"], axis=1, keepdims=True) & stop_when_full
            scores = scores + full.astype(jnp.float32) * NEG
            scores = scores + (~c["improvable"])[:, None].astype(jnp.float32) * NEG
            scores = scores + (~just_finished).astype(jnp.float32) * NEG
            merged_scores = jnp.concatenate([c["finished_scores"], scores], axis=1)
            finished_scores, best = jax.lax.top_k(merged_scores, beams)
            finished = _gather(jnp.concatenate([c["finished"], candidates], axis=1), best)
            is_finished = _gather(jnp.concatenate([c["is_finished"], just_finished], axis=1), best)

            # Each beam's self-attention cache follows its parent (within its own input, so the
            # cross-attention memory, equal for all beams of an input, stays).
            rows = (jnp.arange(batch)[:, None] * beams + parents).reshape(-1)
            cache = kv_cache.reorder(c["cache"], rows, types=(kv_cache.KVCache,))

            best_possible = run_scores[:, 0] / best_length[t]
            worst = jnp.where(is_finished, jnp.min(finished_scores, axis=1, keepdims=True), NEG)
            improvable = c["improvable"] & jnp.any(best_possible[:, None] > worst, axis=1)
            go = (jnp.any(improvable) & ~(jnp.all(is_finished) & stop_when_full)
                  & ~jnp.all(ends) & (t + 1 < new))

            # The next step's logits (one wasted model call after the last step).
            logits, cache = io.step(model, running[:, :, t].reshape(-1),
                                    first_position + t, cache)
            return dict(t=t + 1, logits=logits, cache=cache, go=go, running=running,
                        running_scores=run_scores, finished=finished,
                        finished_scores=finished_scores, is_finished=is_finished,
                        improvable=improvable)

        c = jax.lax.while_loop(lambda c: c["go"], body, carry)
        best_tokens = c["finished"][:, 0]
        is_stop = jnp.isin(best_tokens, stops)
        num_tokens = jnp.where(jnp.any(is_stop, axis=1), jnp.argmax(is_stop, axis=1) + 1, new)
        return best_tokens, num_tokens.astype(jnp.int32), c["finished_scores"][:, 0]

    return run


_compiled: dict = {}
_MAX_COMPILED = 16


def _compiled_fn(graphdef, settings, state, tokens, lengths, rules, controls=None):
    leaves, treedef = jax.tree.flatten(state)
    program = dataclasses.replace(settings, length_penalty=0.0, early_stopping=False)
    key = (graphdef, program, treedef,
           tuple((x.shape, str(x.dtype), getattr(x, "sharding", None)) for x in leaves),
           tokens.shape, None if controls is None else
           tuple((name, x.shape) for name, x in sorted(controls.items())))
    fn = _compiled.get(key)
    if fn is not None:
        return fn, False
    fn = jax.jit(make_beam_fn(graphdef, settings)).lower(state, tokens, lengths, *rules,
                                                         controls).compile()
    if len(_compiled) >= _MAX_COMPILED:
        _compiled.pop(next(iter(_compiled)))
    _compiled[key] = fn
    return fn, True


def beam_decode(model: nnx.Module, prompts: list[list[int]], settings: BeamSettings, *,
                timings: dict | None = None, decoder_prefix=None, suppress_tokens=None,
                begin_suppress_tokens=None) -> BeamOutput:
    """Beam search over `prompts` (lists of token ids, any lengths; images [batch, height, width,
    channels] for an image-to-text model; log-mel features [batch, mel bins, frames] for
    Whisper). `timings`, if given, gets "compile_s" (0 when cached) and "total_s" (the search
    itself). `decoder_prefix`, `suppress_tokens`, `begin_suppress_tokens`: as
    `jaxformer.generate.generate` takes them."""
    config = model.config
    io = steps_for(model)
    io.check_request(prompts, settings.max_new_tokens, config)
    graphdef, state = nnx.split(model)
    tokens, lengths = io.inputs(prompts, config, settings.pad_id)
    controls = decoder_controls(config, len(tokens), settings.max_new_tokens,
                                decoder_prefix=decoder_prefix, suppress_tokens=suppress_tokens,
                                begin_suppress_tokens=begin_suppress_tokens).arrays()
    rules = rule_arguments(settings)
    start = time.perf_counter()
    fn, fresh = _compiled_fn(graphdef, settings, state, tokens, lengths, rules, controls)
    compiled_at = time.perf_counter()
    out = jax.block_until_ready(fn(state, tokens, lengths, *rules, controls))
    if timings is not None:
        timings["compile_s"] = compiled_at - start if fresh else 0.0
        timings["total_s"] = time.perf_counter() - compiled_at
    return BeamOutput(*(np.asarray(x) for x in out))


def beam_search(model: nnx.Module, prompts: list[list[int]], max_new_tokens: int, *,
                num_beams: int = 4, length_penalty: float = 1.0,
                early_stopping: bool | str = False, stop_tokens: list[int] | None = None,
                timings: dict | None = None, decoder_prefix=None, suppress_tokens=None,
                begin_suppress_tokens=None) -> list[list[int]]:
    """The best continuation of each prompt (for an encoder-decoder: the best output for each
    source) by beam search with `num_beams` beams, as HF transformers' `generate(num_beams=...)`
    finds it (see the module docstring for the rules). A hypothesis ends at one of `stop_tokens`
    (kept as its last token) or after `max_new_tokens`. `decoder_prefix`, `suppress_tokens`,
    `begin_suppress_tokens`: as `jaxformer.generate.generate` takes them. Returns the new tokens
    of each prompt."""
    settings = make_settings(max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                             early_stopping=early_stopping, stop_tokens=stop_tokens)
    out = beam_decode(model, prompts if hasattr(prompts, "shape") else list(prompts), settings,
                      timings=timings, decoder_prefix=decoder_prefix,
                      suppress_tokens=suppress_tokens, begin_suppress_tokens=begin_suppress_tokens)
    return [row[:n].tolist() for row, n in zip(out.tokens, out.num_tokens)]
