"""Sparse attention patterns: which keys a query may see, besides causality, padding and segments.

Every pattern is defined on token indices i (query) and j (key) within a row, as the sliding
window always was:

- sliding (Mistral, Longformer's local part): |i - j| < window.
- strided (Child et al. 2019, "Generating Long Sequences with Sparse Transformers", section 4.2,
  the merged form of its two heads): the previous `stride` tokens, |i - j| <= stride, and every
  token a multiple of `stride` away, (i - j) mod stride == 0.
- fixed (Child et al. 2019, same section): the tokens of the query's own block of `stride`,
  floor(i / stride) == floor(j / stride), and the last `summary` tokens of every block,
  j mod stride >= stride - summary.
- global_local (Longformer, Beltagy et al. 2020; BigBird's global tokens, Zaheer et al. 2020):
  a sliding window |i - j| < window, plus `global_tokens` tokens at the start of the row that
  every query sees and that see every key.

`SparsePattern.allowed` is the dense definition (the reference mask). `SparsePattern.parts`
splits the pattern into disjoint parts, each with an order of queries and keys in which its
allowed pairs fall into few dense blocks: the strided part is dense once tokens are grouped by
i mod stride, the fixed summaries once the summary keys are gathered together, the global rows
once the global queries are taken apart. `chunked_attention` runs each part over its live blocks
only and merges them with their log-sum-exp, so the cost grows with the number of allowed pairs.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

PATTERNS = ("sliding", "strided", "fixed", "global_local")


@dataclasses.dataclass(frozen=True)
class SparsePattern:
    kind: str
    window: int = 0  # sliding, global_local: |i - j| < window
    stride: int = 0  # strided: the local reach and the stride; fixed: the block length
    summary: int = 0  # fixed: summary tokens at the end of each block
    global_tokens: int = 0  # global_local: tokens at the start of the row that see and are seen

    def __post_init__(self):
        if self.kind not in PATTERNS:
            raise ValueError(f"unknown sparse pattern {self.kind!r}: use one of {list(PATTERNS)}")
        needs = {"sliding": ("window",), "strided": ("stride",), "fixed": ("stride", "summary"),
                 "global_local": ("window", "global_tokens")}[self.kind]
        for name in needs:
            if getattr(self, name) <= 0:
                raise ValueError(f"the {self.kind} pattern needs a positive {name}, got "
                                 f"{getattr(self, name)}")
        if self.kind == "fixed" and self.summary > self.stride:
            raise ValueError(f"the fixed pattern's summary ({self.summary}) cannot exceed its "
                             f"block length stride ({self.stride})")

    def allowed(self, i, j):
        """Whether query i may see key j by the pattern alone (no causality): numpy or jax
        integer arrays that broadcast against each other."""
        d = i - j
        if self.kind == "sliding":
            return abs(d) < self.window
        if self.kind == "strided":
            return (abs(d) <= self.stride) | (d % self.stride == 0)
        if self.kind == "fixed":
            return (i // self.stride == j // self.stride) | (j % self.stride >= self.stride - self.summary)
        return (abs(d) < self.window) | (i < self.global_tokens) | (j < self.global_tokens)

    def parts(self, causal: bool, length: int) -> tuple["Part", ...]:
        """Disjoint parts whose union is the pattern (with causality if `causal`)."""
        c = _causal(causal)
        if self.kind == "sliding":
            w = self.window
            return (Part(lambda i, j: c(i, j) & (abs(i - j) < w),
                         reach=(0 if causal else 1 - w, w - 1), band=True),)
        tokens = np.arange(length)
        if self.kind == "strided":
            s = self.stride
            by_residue = np.argsort(tokens % s, kind="stable")  # i mod s groups, each in order
            return (
                Part(lambda i, j: c(i, j) & (abs(i - j) <= s), reach=(0 if causal else -s, s), band=True),
                Part(lambda i, j: c(i, j) & (abs(i - j) > s) & ((i - j) % s == 0),
                     q_tokens=by_residue, k_tokens=by_residue),
            )
        if self.kind == "fixed":
            s, first_summary = self.stride, self.stride - self.summary
            summaries = tokens[tokens % s >= first_summary]
            return (
                Part(lambda i, j: c(i, j) & (i // s == j // s), reach=(0 if causal else 1 - s, s - 1)),
                Part(lambda i, j: c(i, j) & (i // s != j // s) & (j % s >= first_summary),
                     k_tokens=summaries),
            )
        w, g = self.window, min(self.global_tokens, length)
        local = lambda i, j: abs(i - j) < w  # noqa: E731
        parts = [
            Part(lambda i, j: c(i, j) & local(i, j), reach=(0 if causal else 1 - w, w - 1),
                 band=True),
            Part(lambda i, j: c(i, j) & ~local(i, j) & (j < g), k_tokens=tokens[:g]),
        ]
        if not causal:  # causal global queries only see keys before them: covered above
            parts.append(Part(lambda i, j: ~local(i, j) & (j >= g) & (i < g), q_tokens=tokens[:g]))
        return tuple(parts)

    def describe(self) -> str:
        return {"sliding": f"sliding window {self.window}",
                "strided": f"strided, stride {self.stride}",
                "fixed": f"fixed, blocks of {self.stride} with {self.summary} summary tokens",
                "global_local": f"window {self.window} + {self.global_tokens} global tokens",
                }[self.kind]


def _causal(causal: bool) -> Callable:
    if causal:
        return lambda i, j: i >= j
    return lambda i, j: (i >= j) | (i < j)  # all True, shaped like the broadcast of i and j


@dataclasses.dataclass(frozen=True, eq=False)
class Part:
    """One disjoint part of a mask. `allowed(i, j)` includes causality. `q_tokens`/`k_tokens`:
    the token indices of the queries/keys this part reads, in the order it reads them (None: all,
    in order). `reach`: bounds (lo, hi) on i - j that every allowed pair satisfies, when known,
    which lets the block layout skip far blocks without testing them; `band`: the part is
    exactly that range of i - j, so blocks of in-order tokens need no testing at all."""

    allowed: Callable
    q_tokens: np.ndarray | None = None
    k_tokens: np.ndarray | None = None
    reach: tuple[int | None, int | None] | None = None
    band: bool = False  # allowed(i, j) is exactly lo <= i - j <= hi


def dense_part(causal: bool) -> Part:
    """The whole mask as one part: causal, or everything."""
    return Part(_causal(causal), reach=(0, None) if causal else None, band=True)


def make_pattern(sliding_window: int | None = None, kind: str | None = None, *, stride: int = 0,
                 summary: int = 0, global_tokens: int = 0) -> SparsePattern | None:
    """The pattern a model config asks for: `kind` (strided, fixed, global_local) or, without one,
    a sliding window; None for full attention. global_local takes its window from
    `sliding_window`."""
    if kind is None:
        return None if sliding_window is None else SparsePattern("sliding", window=sliding_window)
    if kind == "global_local":
        if sliding_window is None:
            raise ValueError("the global_local pattern needs a sliding_window for its local part")
        return SparsePattern(kind, window=sliding_window, global_tokens=global_tokens)
    if sliding_window is not None:
        raise ValueError(f"sliding_window={sliding_window} cannot be combined with the {kind} "
                         f"pattern: unset one of them")
    return SparsePattern(kind, stride=stride, summary=summary)
