"""`classification` (a label per text or text pair, from the pooled [CLS]) and
`token_classification` (a label per word, from its first piece), for encoders.

Loss: cross-entropy of each labelled item; metric: accuracy. The report compares the validation
accuracy with the majority baseline (always the most frequent training label) and, for token
classification, gives each label's precision, recall and F1.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.tasks.labelled import LabelledConfig, LabelledTask
from jaxformer.tasks.losses import token_cross_entropy
from jaxformer.tasks.registry import register_task


@dataclasses.dataclass
class ClassificationConfig(LabelledConfig):
    dataset: str = "tinyshakespeare-speakers"


@dataclasses.dataclass
class TokenClassificationConfig(LabelledConfig):
    dataset: str = "tinyshakespeare-sentence-starts"


def accuracy_metric(logits, labels, weights):
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
    return correct.astype(jnp.float32), jnp.sum(weights)


@register_task
class Classification(LabelledTask):
    name = "classification"
    kind = "classification"
    config_class = ClassificationConfig
    default_dataset = "tinyshakespeare-speakers"

    def featurize(self, example: dict) -> dict:
        pair = example.get("text_pair")
        row = self.pair_row(self.tokenizer.encode(example["text"]),
                            None if pair is None else self.tokenizer.encode(pair))
        row["labels"] = np.int32(self.label_names.index(str(example["label"])))
        return row

    def target_spec(self, batch_size: int) -> dict:
        return {"labels": jax.ShapeDtypeStruct((batch_size,), np.int32)}

    def loss(self, output, batch):
        weights = batch["weight"].astype(jnp.float32)
        losses = token_cross_entropy(output.logits, batch["labels"])
        count = jnp.sum(weights)
        return (jnp.sum(losses * weights), count,
                {"accuracy": accuracy_metric(output.logits, batch["labels"], weights)})

    def report(self, model, say) -> dict:
        correct = total = 0.0
        for batch, output in self.predictions(model):
            keep = batch["weight"] > 0
            correct += float(np.sum(np.argmax(output.logits, -1)[keep] == batch["labels"][keep]))
            total += float(keep.sum())
        train_labels = np.asarray([r["labels"] for r in self.train_rows])
        majority = int(np.bincount(train_labels).argmax())
        val_labels = np.asarray([r["labels"] for r in self.val_rows])
        baseline = float(np.mean(val_labels == majority))
        accuracy = correct / max(total, 1.0)
        say(f"validation accuracy {accuracy:.4f} over {int(total)} examples (majority baseline, "
            f"always {self.label_names[majority]!r}: {baseline:.4f})")
        return {"accuracy": accuracy, "majority_baseline": baseline}


@register_task
class TokenClassification(LabelledTask):
    name = "token_classification"
    kind = "token_classification"
    config_class = TokenClassificationConfig
    default_dataset = "tinyshakespeare-sentence-starts"

    def featurize(self, example: dict) -> dict:
        """Each word's tag on its first piece (the others are not scored, as HF's examples do);
        words past train.seq_len are cut."""
        ids, word_ids = self.tokenizer.encode_words(example["words"])
        keep = self.config.train.seq_len - 2
        row = self.pair_row(ids[:keep], None)
        labels = np.zeros(self.config.train.seq_len, np.int32)
        weights = np.zeros(self.config.train.seq_len, np.float32)
        previous = None
        for i, word in enumerate(word_ids[:keep]):
            if word is not None and word != previous:
                labels[i + 1] = self.label_names.index(str(example["tags"][word]))
                weights[i + 1] = 1.0
            previous = word
        return row | {"labels": labels, "label_weights": weights}

    def target_spec(self, batch_size: int) -> dict:
        shape = (batch_size, self.config.train.seq_len)
        return {"labels": jax.ShapeDtypeStruct(shape, np.int32),
                "label_weights": jax.ShapeDtypeStruct(shape, np.float32)}

    def loss(self, output, batch):
        weights = batch["label_weights"] * batch["weight"][:, None]
        losses = token_cross_entropy(output.logits, batch["labels"])
        return (jnp.sum(losses * weights), jnp.sum(weights),
                {"accuracy": accuracy_metric(output.logits, batch["labels"], weights)})

    def report(self, model, say) -> dict:
        predicted, actual = [], []
        for batch, output in self.predictions(model):
            keep = (batch["label_weights"] * batch["weight"][:, None]) > 0
            predicted.append(np.argmax(output.logits, -1)[keep])
            actual.append(batch["labels"][keep])
        predicted, actual = np.concatenate(predicted), np.concatenate(actual)
        accuracy = float(np.mean(predicted == actual))
        counts = np.bincount(np.concatenate([r["labels"][r["label_weights"] > 0]
                                             for r in self.train_rows]))
        baseline = float(np.mean(actual == counts.argmax()))
        scores = {}
        for i, name in enumerate(self.label_names):
            tp = float(np.sum((predicted == i) & (actual == i)))
            precision = tp / max(float(np.sum(predicted == i)), 1.0)
            recall = tp / max(float(np.sum(actual == i)), 1.0)
            f1 = 2 * precision * recall / max(precision + recall, 1e-9)
            scores[name] = {"precision": precision, "recall": recall, "f1": f1}
        shown = ", ".join(f"{n} F1 {s['f1']:.3f}" for n, s in scores.items())
        say(f"validation token accuracy {accuracy:.4f} over {len(actual)} words (majority "
            f"baseline: {baseline:.4f}); {shown}")
        return {"accuracy": accuracy, "majority_baseline": baseline, "labels": scores}
