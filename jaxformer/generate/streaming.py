"""Host-side consumers of the tokens the compiled loop streams out (`generate(..., on_tokens=)`)."""

import sys
import time

import numpy as np


class TokenTimer:
    """Records when each step's tokens arrive: time to first token, and decode speed after it.
    `start_time` is when the compiled program was dispatched (`decode`'s timings["run_start"]),
    so compilation is not counted."""

    def __init__(self, then=None):
        self.then = then  # another consumer to forward each step to
        self.start_time = self.first_time = self.last_time = None
        self.tokens_after_first = 0

    def __call__(self, step: int, tokens: np.ndarray, valid: np.ndarray) -> None:
        now = time.perf_counter()
        if step == 0:
            self.first_time = now
        else:
            self.tokens_after_first += int(valid.sum())
        self.last_time = now
        if self.then is not None:
            self.then(step, tokens, valid)

    @property
    def ttft_s(self) -> float:
        return self.first_time - self.start_time

    @property
    def decode_tokens_per_s(self) -> float:
        elapsed = self.last_time - self.first_time
        return self.tokens_after_first / elapsed if elapsed > 0 else float("nan")


class TextStream:
    """Prints row `row`'s text as its tokens arrive. Each step decodes the whole continuation and
    prints what is new, so tokenizers whose pieces merge (sentencepiece's leading spaces, byte-level
    BPE splitting a character over two tokens) still print the right text; a trailing U+FFFD
    (half a character) is held back until the next token completes it."""

    def __init__(self, tokenizer, *, row: int = 0, out=None):
        self.tokenizer, self.row = tokenizer, row
        self.out = out or sys.stdout
        self.tokens: list[int] = []
        self.printed = ""

    def __call__(self, step: int, tokens: np.ndarray, valid: np.ndarray) -> None:
        if not valid[self.row]:
            return
        self.tokens.append(int(tokens[self.row]))
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd"):
            return
        if text.startswith(self.printed):
            self.out.write(text[len(self.printed):])
            self.out.flush()
            self.printed = text

    def finish(self) -> str:
        """Print whatever is still held back; returns the full text."""
        text = self.tokenizer.decode(self.tokens)
        if text.startswith(self.printed):
            self.out.write(text[len(self.printed):])
        self.out.flush()
        self.printed = text
        return text
