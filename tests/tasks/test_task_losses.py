"""Task losses against numpy: BERT's masked-LM loss (+ NSP) as sums whose ratio is the mean
cross-entropy of the masked predictions plus the mean NSP cross-entropy."""

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np

from jaxformer.tasks.masked_lm import MaskedLM, MaskedLMConfig


def naive_cross_entropy(logits, labels):
    """-log softmax(logits)[label], row by row, in float64."""
    logits = np.asarray(logits, np.float64)
    out = np.zeros(labels.shape)
    for index in np.ndindex(labels.shape):
        row = logits[index]
        out[index] = np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[labels[index]]
    return out


def test_mlm_loss_scores_only_the_masked_predictions():
    rng = np.random.default_rng(0)
    batch, predictions, vocab = 3, 5, 11
    logits = rng.normal(size=(batch, predictions, vocab)).astype(np.float32) * 3
    nsp_logits = rng.normal(size=(batch, 2)).astype(np.float32) * 2
    ids = rng.integers(0, vocab, (batch, predictions)).astype(np.int32)
    weights = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    labels = np.array([0, 1, 1], np.int32)
    task = MaskedLM(SimpleNamespace(task=MaskedLMConfig(nsp=True)))
    output = SimpleNamespace(logits=jnp.asarray(logits), seq_relationship_logits=jnp.asarray(nsp_logits))
    total, count, metrics = task.loss(output, {"masked_ids": ids, "masked_weights": weights,
                                              "nsp_labels": labels})

    mlm = naive_cross_entropy(logits, ids)[weights > 0]  # the padded predictions count for nothing
    nsp = naive_cross_entropy(nsp_logits, labels)
    assert float(count) == len(mlm) == 9
    np.testing.assert_allclose(float(total) / float(count), mlm.mean() + nsp.mean(), rtol=1e-5)
    mlm_sum, mlm_count = metrics["mlm_loss"]
    np.testing.assert_allclose(float(mlm_sum) / float(mlm_count), mlm.mean(), rtol=1e-5)
    nsp_sum, nsp_count = metrics["nsp_loss"]
    np.testing.assert_allclose(float(nsp_sum) / float(nsp_count), nsp.mean(), rtol=1e-5)
