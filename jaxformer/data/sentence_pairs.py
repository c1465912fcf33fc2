"""BERT's pretraining inputs as grain transforms: sentence pairs from documents, the pair laid out
as `[CLS] A [SEP] B [SEP]`, longest-first truncation.

Pairs (next-sentence prediction, NSP): A is one or more consecutive sentences of a document,
starting at a uniformly random sentence that has a successor. With probability 1/2, B is what
follows A in the same document (label 0, "is next", as HF labels it); otherwise B starts at a
random sentence of another document (label 1, "random"). A takes about half of the token budget,
B fills the rest; then the longer of the two (B on a tie) loses its last token until the pair
fits (HF's `longest_first`). Without NSP a row is one segment: consecutive sentences up to the budget.

Each example is a function of (seed, example index) alone, so an iterator resumes exactly from its
position and every process can draw its own share of an endless stream.
"""

import numpy as np

PAD_TYPE = 0


def truncate_longest_first(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Drop the last token of the longer sequence (B on a tie, so A keeps an odd token, as HF's
    tokenizers do) until len(a) + len(b) fits."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
    return a, b


def format_pair(a: list[int], b: list[int] | None, *, seq_len: int, cls_id: int, sep_id: int,
                pad_id: int) -> dict[str, np.ndarray]:
    """`[CLS] a [SEP] (b [SEP])` padded to `seq_len`, truncated longest-first to fit:
    tokens, token_types (0 for [CLS] a [SEP], 1 for b [SEP]), segment_ids (1 real, 0 padding),
    special_mask (True at [CLS], [SEP] and padding: never chosen for masking)."""
    specials = 3 if b is not None else 2
    a, b = truncate_longest_first(a, b or [], seq_len - specials)
    first = [cls_id, *a, sep_id]
    second = [*b, sep_id] if specials == 3 else []
    n = len(first) + len(second)
    tokens = np.full(seq_len, pad_id, np.int32)
    tokens[:n] = first + second
    token_types = np.zeros(seq_len, np.int32)
    token_types[len(first):n] = 1
    segment_ids = np.zeros(seq_len, np.int32)
    segment_ids[:n] = 1
    special = np.ones(seq_len, bool)
    special[1:len(first) - 1] = False
    special[len(first):len(first) + len(b)] = False
    return {"tokens": tokens, "token_types": token_types, "segment_ids": segment_ids,
            "special_mask": special}


class SentencePairs:
    """index, rng -> an example dict: a sentence pair (or one segment) from `documents` laid out
    in `seq_len` tokens, with `nsp_labels` (0 is next, 1 random) when `nsp`.

    documents: each a list of int token arrays, one per sentence. As a grain `random_map`
    transform the rng is grain's per-element generator; `example(rng)` may be called directly."""

    def __init__(self, documents: list[list[np.ndarray]], *, seq_len: int, nsp: bool,
                 cls_id: int, sep_id: int, pad_id: int):
        self.documents = [[np.asarray(s, np.int32) for s in doc] for doc in documents if doc]
        self.seq_len, self.nsp = seq_len, nsp
        self.ids = dict(cls_id=cls_id, sep_id=sep_id, pad_id=pad_id)
        # A can start at any sentence that has a successor in its document (NSP needs one).
        self.starts = np.asarray([(d, s) for d, doc in enumerate(self.documents)
                                  for s in range(len(doc) - 1 if nsp else len(doc))], np.int64)
        if len(self.starts) == 0 or (nsp and len(self.documents) < 2):
            raise ValueError("sentence pairs need at least two documents with two sentences "
                             "each (one sentence each without NSP)")

    def _fill(self, doc: int, start: int, stop: int, budget: int) -> tuple[list[int], int]:
        """Sentences doc[start:stop] in order, at least one, until `budget` tokens are reached.
        Returns (tokens, index after the last sentence taken)."""
        tokens: list[int] = []
        i = start
        while i < stop and (i == start or len(tokens) < budget):
            tokens.extend(self.documents[doc][i].tolist())
            i += 1
        return tokens, i

    def example(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        doc, start = (int(v) for v in self.starts[rng.integers(len(self.starts))])
        sentences = self.documents[doc]
        if not self.nsp:
            a, _ = self._fill(doc, start, len(sentences), self.seq_len - 2)
            return format_pair(a, None, seq_len=self.seq_len, **self.ids)
        budget = self.seq_len - 3
        # A stops before the document's last sentence, so a true next sentence always exists.
        a, after = self._fill(doc, start, len(sentences) - 1, budget // 2)
        is_random = bool(rng.random() < 0.5)
        if is_random:
            other = int(rng.integers(len(self.documents) - 1))
            other += other >= doc  # any document but this one
            first = int(rng.integers(len(self.documents[other])))
            b, _ = self._fill(other, first, len(self.documents[other]), budget - len(a))
        else:
            b, _ = self._fill(doc, after, len(sentences), budget - len(a))
        example = format_pair(a, b, seq_len=self.seq_len, **self.ids)
        example["nsp_labels"] = np.int32(is_random)
        return example

    def __call__(self, _index, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.example(rng)
