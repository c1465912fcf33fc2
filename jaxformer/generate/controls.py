"""What steers an encoder-decoder's decoding besides the sampling rule: a decoder prefix in place
of the start token, and suppressed tokens. Whisper is driven so: its decoder starts from
<|startoftranscript|>, a language, a task and <|notimestamps|>, and its checkpoints list tokens
never to produce (`suppress_tokens`) and tokens not to start with (`begin_suppress_tokens`).

    controls = decoder_controls(model.config, batch=2, max_new_tokens=32,
                                decoder_prefix=[50258, 50259, 50359, 50363],
                                suppress_tokens=[1, 2, 7], begin_suppress_tokens=[220, 50257])
    controls.arrays()   # {"prefix": [2, 4] int32, "suppress": [V] bool, "begin_suppress": [V] bool}

The arrays are traced arguments of the compiled programs (sampling and beam search): another
prefix of the same length, or other suppressed tokens, reuse the program.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.errors import UserError


@dataclasses.dataclass(frozen=True)
class DecoderControls:
    """`prefix` [batch, P] int32: the decoder's first P tokens in place of its start token;
    `suppress` [vocab] bool: tokens never produced (their logits set to -inf at every step, as
    HF's SuppressTokensLogitsProcessor does); `begin_suppress` [vocab] bool: tokens not produced
    as the first new token (HF's SuppressTokensAtBeginLogitsProcessor). None: not used."""

    prefix: np.ndarray | None = None
    suppress: np.ndarray | None = None
    begin_suppress: np.ndarray | None = None

    def arrays(self) -> dict | None:
        """The traced argument of the compiled programs (None when nothing is set)."""
        found = {name: getattr(self, name) for name in ("prefix", "suppress", "begin_suppress")
                 if getattr(self, name) is not None}
        return found or None


def suppressed(logits: jax.Array, controls: dict | None, first: bool) -> jax.Array:
    """logits [batch, vocab] (or log-probabilities) with the suppressed tokens at -inf
    (`begin_suppress` only when `first`, the first new token). `controls`: the arrays of a
    `DecoderControls`, or None."""
    controls = controls or {}
    for name, applies in (("suppress", True), ("begin_suppress", first)):
        if applies and name in controls:
            logits = jnp.where(controls[name], -jnp.inf, logits)
    return logits


def _token_mask(name: str, tokens, vocab_size: int) -> np.ndarray | None:
    if tokens is None:
        return None
    ids = [int(t) for t in tokens]
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise UserError(f"{name} has token id {bad[0]} outside the vocabulary [0, {vocab_size})")
    mask = np.zeros((vocab_size,), bool)
    mask[ids] = True
    return mask


def decoder_controls(config, batch: int, max_new_tokens: int, *, decoder_prefix=None,
                     suppress_tokens=None, begin_suppress_tokens=None) -> DecoderControls:
    """Checked controls for a request of `batch` rows (UserError naming the bad value).
    `decoder_prefix`: one list of token ids for every row, or a list per row (all of one
    length); only for encoder-decoder models, whose prefix and new tokens must fit the decoder's
    positions."""
    prefix = None
    if decoder_prefix is not None:
        if not getattr(config, "is_encoder_decoder", False):
            raise UserError("decoder_prefix is for encoder-decoder models: a decoder-only model's "
                            "prompt is its prefix")
        rows = list(decoder_prefix)
        if rows and not isinstance(rows[0], (list, tuple, np.ndarray)):
            rows = [rows] * batch
        lengths = {len(r) for r in rows}
        if len(rows) != batch or len(lengths) != 1 or 0 in lengths:
            raise UserError(f"decoder_prefix must be one non-empty list of token ids, or {batch} "
                            f"lists (one per input) of one length")
        prefix = np.asarray(rows, np.int32)
        bad = prefix[(prefix < 0) | (prefix >= config.vocab_size)]
        if bad.size:
            raise UserError(f"decoder_prefix has token id {bad[0]} outside the vocabulary "
                            f"[0, {config.vocab_size})")
        needed = prefix.shape[1] + max_new_tokens - 1
        if needed > config.max_seq_len:
            raise UserError(f"a decoder prefix of {prefix.shape[1]} tokens and {max_new_tokens} "
                            f"new ones need {needed} decoder positions, more than the model's "
                            f"{config.max_seq_len}: lower max_new_tokens")
    return DecoderControls(prefix=prefix,
                           suppress=_token_mask("suppress_tokens", suppress_tokens,
                                                config.vocab_size),
                           begin_suppress=_token_mask("begin_suppress_tokens",
                                                      begin_suppress_tokens, config.vocab_size))
