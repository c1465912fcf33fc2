"""Captions made from class labels, and the word-level tokenizer they need.

    captions = Captions(("a photo of the digit {}", "a handwritten {}"), names=("zero", ...))
    tokens, segment_ids = captions.encode(["a handwritten seven"])

Ids: 0 padding, 1 start of text, then the words (sorted), and last the end-of-text token, so it
has the largest id (the texts are then pooled at it under either of HF CLIP's rules).
"""

import numpy as np

from jaxformer.errors import UserError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a photo of the digit {}", "a handwritten {}", "the number {}", "a drawing of a {}",
             "{}")
PAD, START = 0, 1


class Captions:
    """Caption templates ("... {} ...", the class name in place of {}) over named classes."""

    def __init__(self, templates, names, prompt: str | None = None):
        templates = tuple(templates)
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise UserError(f"caption templates must each hold one '{{}}' for the class name, "
                            f"got {list(templates)}")
        self.templates, self.names = templates, tuple(names)
        self.prompt = prompt or templates[0]
        texts = [t.format(n) for t in (*templates, self.prompt) for n in self.names]
        words = sorted({w for text in texts for w in text.split()})
        self.ids = {w: i + 2 for i, w in enumerate(words)}
        self.eos_token_id = len(words) + 2
        self.vocab_size = len(words) + 3
        self.max_len = max(len(text.split()) for text in texts) + 2

    def encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int32 [n, max_len], segment_ids int32 [n, max_len]: 1 on text, 0 on padding)."""
        tokens = np.zeros((len(texts), self.max_len), np.int32)
        for row, text in enumerate(texts):
            unknown = [w for w in text.split() if w not in self.ids]
            if unknown:
                raise UserError(f"caption {text!r} has words outside the vocabulary: {unknown}")
            ids = [START, *(self.ids[w] for w in text.split()), self.eos_token_id]
            if len(ids) > self.max_len:
                raise UserError(f"caption {text!r} is longer than {self.max_len - 2} words")
            tokens[row, :len(ids)] = ids
        return tokens, (tokens != PAD).astype(np.int32)

    def decode(self, tokens) -> str:
        words = {i: w for w, i in self.ids.items()}
        return " ".join(words[int(t)] for t in tokens if int(t) in words)

    def for_labels(self, labels: np.ndarray, rng: np.random.Generator | None = None) -> list[str]:
        """One caption per label: a random template each (with `rng`), else the first."""
        choice = (rng.integers(0, len(self.templates), size=len(labels)) if rng is not None
                  else np.zeros(len(labels), int))
        return [self.templates[c].format(self.names[label]) for c, label in zip(choice, labels)]

    def class_prompts(self) -> tuple[np.ndarray, np.ndarray]:
        """The zero-shot prompt for every class: (tokens, segment_ids) [classes, max_len]."""
        return self.encode([self.prompt.format(n) for n in self.names])
