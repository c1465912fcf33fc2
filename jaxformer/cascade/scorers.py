"""Scorers: how much to trust a model's answer, from its own output distribution.

- `confidence`: the probability the model gives its answer (the max softmax probability), the
  baseline of selective prediction (Hendrycks and Gimpel 2017).
- `LogisticScorer`: a small classifier trained on validation queries to predict whether an
  answer is right from the distribution's features (top probability, the margin to the second,
  the entropy), FrugalGPT's learned scorer in miniature (it uses a DistilBERT over the query and
  answer; here the features of the answering model's own distribution).
"""

import dataclasses

import numpy as np


def features(probs: np.ndarray) -> np.ndarray:
    """probs [queries, vocab] -> [queries, 3]: top probability, margin to the second, entropy."""
    top2 = -np.sort(-probs, axis=-1)[:, :2]
    entropy = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=-1)
    return np.stack([top2[:, 0], top2[:, 0] - top2[:, 1], entropy], axis=-1)


def confidence(probs: np.ndarray) -> np.ndarray:
    """[queries]: the top probability."""
    return probs.max(axis=-1)


@dataclasses.dataclass
class LogisticScorer:
    """P(answer right | features), logistic regression fitted by Newton's method (a few
    iterations of iteratively reweighted least squares, with a small L2 penalty)."""

    weights: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    l2: float = 1e-3

    def _design(self, feats: np.ndarray) -> np.ndarray:
        z = (feats - self.mean) / self.std
        return np.concatenate([z, np.ones((len(z), 1))], axis=1)

    def fit(self, probs: np.ndarray, correct: np.ndarray, iterations: int = 25) -> "LogisticScorer":
        feats = features(probs)
        self.mean, self.std = feats.mean(0), feats.std(0) + 1e-8
        x, y = self._design(feats), correct.astype(np.float64)
        w = np.zeros(x.shape[1])
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-x @ w))
            grad = x.T @ (p - y) + self.l2 * w
            hessian = (x * (p * (1 - p))[:, None]).T @ x + self.l2 * np.eye(len(w))
            w -= np.linalg.solve(hessian, grad)
        self.weights = w
        return self

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise ValueError("fit the scorer on validation data first")
        return 1.0 / (1.0 + np.exp(-self._design(features(probs)) @ self.weights))
