"""The decoding loop: one compiled pure function of (model state, prompt tokens, lengths, rng).

    prefill:  the padded prompts [batch, bucket] go through the model once, writing every prompt
              token's keys/values into a preallocated cache; row i's next-token logits are read at
              its last real token, len_i - 1, and token 0 is sampled from them. (An
              encoder-decoder encodes the prompts and runs its decoder on the start token
              instead: see `steps.py`.)
    decode:   `jax.lax.scan` over steps t = 1 .. max_new_tokens - 1: feed token t-1 at position
              p_i + t - 1 (written at that cache slot; p_i = len_i, or 1 for an encoder-decoder),
              sample token t.

Everything static (which sampling rules apply, top-k, stop tokens, the number of new tokens,
whether to stream) is in `DecodeSettings`; the temperature and top-p values are traced arguments,
so changing them reuses the compiled program. The program is memoized per (graph definition,
static settings, input shapes), so prompts of a new length that fall in an old bucket reuse the
old program too.

An encoder-decoder's decoder may start from a given prefix instead of its start token, and
tokens may be suppressed (Whisper's `suppress_tokens`, and `begin_suppress_tokens` at the first
new token only): the `controls` argument, a dict of traced arrays (`DecoderControls.arrays`), so
other prefixes of the same length and other suppressed sets reuse the compiled program.

Each row has its own key: row i's randomness at step t is `fold_in(rngs[i], t)`, drawn over that
row alone, so a row's tokens do not depend on the other rows of the batch, a seed fixes the text,
and asking for more tokens extends the same text rather than changing it.
"""

import dataclasses
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.generate import sampling
from jaxformer.generate.controls import suppressed
from jaxformer.generate.steps import steps_for
from jaxformer.nn.lora import adapter_rows


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """A decoding request's settings. `program_key` is the part that shapes the compiled program:
    the temperature and top-p values are passed to it as arguments."""

    max_new_tokens: int
    temperature: float = 1.0  # 0: greedy (a program of its own); other values share one
    top_k: int | None = None
    top_p: float | None = None  # None: no nucleus stage; any value in (0, 1) shares one program
    stop_tokens: tuple[int, ...] = ()
    pad_id: int = 0  # emitted by a row after its stop token
    stream: bool = False  # call the registered token sink from inside the loop at every step
    return_logits: bool = False  # also return every step's logits [batch, max_new_tokens, vocab]

    def program_key(self) -> tuple:
        return (self.max_new_tokens, self.temperature == 0.0, self.top_k, self.top_p is not None,
                self.stop_tokens, self.pad_id, self.stream, self.return_logits)


@dataclasses.dataclass
class DecodeOutput:
    tokens: np.ndarray  # [batch, max_new_tokens] int32; pad_id after a row's stop token
    num_tokens: np.ndarray  # [batch] int32: new tokens up to and including the stop token
    logits: np.ndarray | None = None  # [batch, max_new_tokens, vocab] float32 if asked for


@dataclasses.dataclass
class _LoopState:
    """What decoding keeps across calls, for the whole process: the streaming sink (see below),
    the lock that allows one sink at a time, how many programs were traced, the compiled ones."""

    sink: "token_sink | None" = None
    sink_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    traces: int = 0
    compiled: dict = dataclasses.field(default_factory=dict)


_STATE = _LoopState()


# --- streaming: the loop calls `_emit` (a host callback); `_emit` forwards to the current sink. ---
# One sink at a time: the compiled program is shared by every caller, so the sink cannot be baked
# into it; and it is process-wide state, not a contextvar, because the callbacks run on JAX's
# threads, which do not see the caller's context. On several devices the callbacks cannot be
# ordered effects (JAX refuses), so they may arrive out of order or once per device: the sink puts
# them back in step order, once each.
def _emit(step, tokens, valid):
    sink = _STATE.sink
    if sink is not None:
        sink.receive(int(step), np.asarray(tokens), np.asarray(valid))


class token_sink:
    """`with token_sink(fn): ...` routes the streaming loop's tokens to
    fn(step: int, tokens [batch] int32, valid [batch] bool), in step order, while the block runs."""

    def __init__(self, fn: Callable[[int, np.ndarray, np.ndarray], None]):
        self.fn = fn
        self.next_step = 0
        self.pending: dict[int, tuple] = {}

    def receive(self, step: int, tokens: np.ndarray, valid: np.ndarray) -> None:
        if step < self.next_step or step in self.pending:
            return  # a copy from another device
        self.pending[step] = (tokens, valid)
        while self.next_step in self.pending:
            self.fn(self.next_step, *self.pending.pop(self.next_step))
            self.next_step += 1

    def __enter__(self):
        _STATE.sink_lock.acquire()
        _STATE.sink = self
        return self

    def __exit__(self, *exc):
        _STATE.sink = None
        _STATE.sink_lock.release()


# --- the pure function ---
def trace_count() -> int:
    """How many times a decoding program has been traced (each trace precedes a compilation)."""
    return _STATE.traces


def make_decode_fn(graphdef: nnx.GraphDef, settings: DecodeSettings, *,
                   ordered_callbacks: bool = True) -> Callable:
    """decode(state, tokens [batch, bucket] int32, lengths [batch] int32, rngs [batch] keys,
    temperature float32 [], top_p float32 [], adapter_ids [batch] int32 (optional), controls
    (optional, `DecoderControls.arrays()`)) -> (new tokens [batch, max_new_tokens], num_tokens
    [batch], logits or None). Pure; not jitted. Only `settings.program_key()` is read from the
    settings. `adapter_ids` picks each row's LoRA adapter of a model with stacked adapters
    (`jaxformer.finetune.stack_adapters`; -1: the base), gathered per row inside the program.
    The logits returned are the model's, before suppression. `ordered_callbacks=False` is needed
    when the program spans several devices."""
    s = settings
    stop = np.asarray(s.stop_tokens or (-1,), np.int32)  # -1 matches nothing
    greedy = s.temperature == 0.0

    def choose(logits, rngs, step, temperature, top_p):
        if greedy:
            return sampling.greedy(logits)
        keys = jax.vmap(jax.random.fold_in, (0, None))(rngs, step)
        return sampling.sample(logits, keys, temperature=temperature, top_k=s.top_k,
                               top_p=top_p if s.top_p is not None else None)

    def decode(state, tokens, lengths, rngs, temperature, top_p, adapter_ids=None, controls=None):
        with adapter_rows(adapter_ids):  # read by stacked LoRA adapters while tracing
            return run(state, tokens, lengths, rngs, temperature, top_p, controls or {})

    def run(state, tokens, lengths, rngs, temperature, top_p, controls):
        _STATE.traces += 1
        model = nnx.merge(graphdef, state)
        io = steps_for(model)  # decoder-only or encoder-decoder prefill and step
        batch, bucket = tokens.shape[:2]  # images: [batch, height, ...] (their steps ignore bucket)
        prefix = controls.get("prefix")
        max_len = io.cache_length(bucket, s.max_new_tokens, model.config,
                                  *(() if prefix is None else (prefix.shape[1],)))
        last_logits, cache, first_position = io.prefill(model, tokens, lengths, max_len, prefix)
        token = choose(suppressed(last_logits, controls, True), rngs, 0, temperature, top_p)
        valid = jnp.ones((batch,), bool)
        done = jnp.isin(token, stop)
        if s.stream:
            jax.debug.callback(_emit, 0, token, valid, ordered=ordered_callbacks)

        def step(carry, t):
            cache, token, done = carry
            # Merged afresh at the scan's trace level, so a module that sows intermediates (the
            # einsum attention) may do so here.
            model = nnx.merge(graphdef, state)
            logits, cache = io.step(model, token, first_position + t - 1, cache)
            new = choose(suppressed(logits, controls, False), rngs, t, temperature, top_p)
            # A finished row keeps emitting pad; its (ignored) cache writes stay within its own row.
            new = jnp.where(done, s.pad_id, new)
            valid = ~done
            if s.stream:
                jax.debug.callback(_emit, t, new, valid, ordered=ordered_callbacks)
            out = (new, valid, logits) if s.return_logits else (new, valid)
            return (cache, new, done | jnp.isin(new, stop)), out

        steps = jnp.arange(1, s.max_new_tokens, dtype=jnp.int32)
        _, outs = jax.lax.scan(step, (cache, token, done), steps)
        new_tokens = jnp.concatenate([token[None], outs[0]], axis=0).T  # [batch, max_new]
        num_tokens = jnp.sum(jnp.concatenate([valid[None], outs[1]], axis=0), axis=0)
        all_logits = None
        if s.return_logits:
            all_logits = jnp.concatenate([last_logits[None], outs[2]], axis=0).transpose(1, 0, 2)
        return new_tokens, num_tokens.astype(jnp.int32), all_logits

    return decode


# --- the compile cache ---
_MAX_COMPILED = 32


def _leaf_signature(x) -> tuple:
    return (x.shape, str(x.dtype), getattr(x, "sharding", None))


def compiled_decode_fn(graphdef: nnx.GraphDef, settings: DecodeSettings, state, *args
                       ) -> tuple[Callable, bool]:
    """The compiled program for these settings and input shapes, and whether it was just built.
    `args`: the decode function's (tokens, lengths, rngs, temperature, top_p[, adapter_ids
    [, controls]]). Compiling ahead of time (lower + compile) keeps compilation out of the time
    to first token."""
    leaves, treedef = jax.tree.flatten(state)
    arg_leaves, arg_treedef = jax.tree.flatten(args)
    key = (graphdef, settings.program_key(), treedef, tuple(_leaf_signature(x) for x in leaves),
           arg_treedef, tuple(_leaf_signature(x) for x in arg_leaves))
    compiled = _STATE.compiled
    fn = compiled.get(key)
    if fn is not None:
        return fn, False
    one_device = all(len(getattr(x, "sharding", None).device_set) == 1 for x in leaves
                     if getattr(x, "sharding", None) is not None)
    decode = make_decode_fn(graphdef, settings, ordered_callbacks=one_device)
    fn = jax.jit(decode).lower(state, *args).compile()
    if len(compiled) >= _MAX_COMPILED:
        compiled.pop(next(iter(compiled)))  # oldest first
    compiled[key] = fn
    return fn, True


def clear_compile_cache() -> None:
    _STATE.compiled.clear()
