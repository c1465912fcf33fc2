"""`masked_lm`: BERT pretraining, masked-LM with optional next-sentence prediction (NSP).

Data: the corpus as documents of sentences (`jaxformer.data.sentences`), the last `val_fraction`
of the documents held out; sentence pairs and masking as grain transforms
(`jaxformer.data.mlm_pipeline`); a WordPiece tokenizer trained from the corpus or loaded.

Loss: BERT's, the mean cross-entropy of the masked tokens plus (with NSP) the mean NSP
cross-entropy. As sums: loss_sum = MLM sum + NSP mean x MLM count over the scored tokens, so a
step's loss is exactly MLM mean + NSP mean, and accumulated micro-batches weigh each NSP mean by
its share of masked tokens. Metrics: mlm_loss, mlm_accuracy, nsp_loss, nsp_accuracy.

Report: the masked-token accuracy on the validation batches against the unigram baseline (always
guess the training split's most frequent token; and the unigram distribution's cross-entropy),
and the top guesses for `task.sample_text`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data import load_corpus
from jaxformer.data.mlm_pipeline import encode_documents, mlm_dataset
from jaxformer.data.pipeline import stream_seed
from jaxformer.data.sentences import document_sentences
from jaxformer.data.sharding import ProcessShard
from jaxformer.data.splits import split_documents
from jaxformer.errors import ConfigError
from jaxformer.inference import compiled_forward, fill_mask
from jaxformer.tasks.base import Task, TaskConfig, perplexity
from jaxformer.tasks.encoder_common import (check_split, require_encoder, with_vocab_size,
                                            wordpiece_tokenizer)
from jaxformer.tasks.losses import token_cross_entropy
from jaxformer.tasks.registry import register_task


@dataclasses.dataclass
class MaskedLMConfig(TaskConfig):
    nsp: bool = True  # next-sentence prediction (needs model.head=pretraining)
    mask_prob: float = 0.15
    max_predictions: int = 20  # per sequence (Google's BERT: 20 for 128 tokens)
    mask_token_prob: float = 0.8  # of the chosen tokens: [MASK]
    random_token_prob: float = 0.1  # a random token (the rest stay themselves)
    sample_text: str = "to be, or not to [MASK], that is the question."


@register_task
class MaskedLM(Task):
    name = "masked_lm"
    config_class = MaskedLMConfig

    def validate(self) -> None:
        t = self.config.task
        require_encoder(self.config, self.name, ("pretraining",) if t.nsp else ("masked_lm",))
        if not 0.0 < t.mask_prob < 1.0:
            raise ConfigError(f"task.mask_prob={t.mask_prob} must lie in (0, 1)")
        if not 0 < t.max_predictions <= self.config.train.seq_len:
            raise ConfigError(f"task.max_predictions={t.max_predictions} must lie in "
                              f"[1, train.seq_len={self.config.train.seq_len}]")
        if min(t.mask_token_prob, t.random_token_prob) < 0 or \
                t.mask_token_prob + t.random_token_prob > 1:
            raise ConfigError("task.mask_token_prob and task.random_token_prob must be "
                              "non-negative and sum to at most 1")

    def prepare(self, run, say):
        config = self.config
        corpus = load_corpus(config.data.corpus)
        self.tokenizer = wordpiece_tokenizer(config, run, corpus)
        config = self.config = with_vocab_size(config, self.tokenizer, say)
        documents = encode_documents(self.tokenizer, document_sentences(corpus))
        self.train_docs, self.val_docs = split_documents(documents, config.data.val_fraction)
        check_split(self.val_docs, "validation", "documents")
        say(f"{corpus.name}: {len(documents)} documents, "
            f"{sum(len(d) for d in documents):,} sentences; {len(self.val_docs)} documents "
            f"validate")
        return config

    def save_artifacts(self, run) -> None:
        if not run.tokenizer.exists():
            self.tokenizer.save(run.tokenizer)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        t = self.config.train
        p = self.config.task.max_predictions
        spec = {name: jax.ShapeDtypeStruct((batch_size, t.seq_len), np.int32)
                for name in ("tokens", "token_types", "segment_ids")}
        spec |= {name: jax.ShapeDtypeStruct((batch_size, p), dtype) for name, dtype in
                 (("masked_positions", np.int32), ("masked_ids", np.int32),
                  ("masked_weights", np.float32))}
        if self.config.task.nsp:
            spec["nsp_labels"] = jax.ShapeDtypeStruct((batch_size,), np.int32)
        return spec

    def _dataset(self, documents, *, seed: int, batch_size: int, process_index, process_count):
        t = self.config.task
        return mlm_dataset(documents, self.tokenizer, seq_len=self.config.train.seq_len,
                           batch_size=batch_size, seed=seed,
                           shard=ProcessShard.resolve(process_index, process_count), nsp=t.nsp,
                           mask_prob=t.mask_prob, max_predictions=t.max_predictions,
                           mask_token_prob=t.mask_token_prob,
                           random_token_prob=t.random_token_prob)

    def train_iterator(self, *, process_index: int, process_count: int):
        t = self.config.train
        seed = stream_seed(self.config.data, t.seed, "train", "train")
        return iter(self._dataset(self.train_docs, seed=seed, batch_size=t.batch_size,
                                  process_index=process_index, process_count=process_count))

    def eval_batches(self, *, process_index: int, process_count: int) -> list[dict]:
        t = self.config.train
        if not t.eval_batches:
            return []
        seed = stream_seed(self.config.data, 0, "val", "eval")
        iterator = iter(self._dataset(self.val_docs, seed=seed, batch_size=t.batch_size,
                                      process_index=process_index, process_count=process_count))
        return [next(iterator) for _ in range(t.eval_batches)]

    def model_inputs(self, batch: dict) -> dict:
        return {name: batch[name] for name in ("tokens", "token_types", "segment_ids",
                                               "masked_positions")}

    def loss(self, output, batch):
        weights = batch["masked_weights"].astype(jnp.float32)
        logits = output.logits  # [batch, max_predictions, vocab]: the head ran at those positions
        losses = token_cross_entropy(logits, batch["masked_ids"])
        mlm_sum, count = jnp.sum(losses * weights), jnp.sum(weights)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["masked_ids"]) * weights)
        metrics = {"mlm_loss": (mlm_sum, count), "mlm_accuracy": (correct, count)}
        total = mlm_sum
        if self.config.task.nsp:
            nsp_logits, labels = output.seq_relationship_logits, batch["nsp_labels"]
            nsp = token_cross_entropy(nsp_logits, labels)
            n = jnp.float32(labels.shape[0])
            metrics["nsp_loss"] = (jnp.sum(nsp), n)
            metrics["nsp_accuracy"] = (jnp.sum(jnp.argmax(nsp_logits, -1) == labels)
                                       .astype(jnp.float32), n)
            total = total + jnp.sum(nsp) / n * jax.lax.stop_gradient(count)
        return total, count, metrics

    def eval_summary(self, means: dict[str, float]) -> dict[str, float]:
        return {**super().eval_summary(means), "val_mlm_ppl": perplexity(means["mlm_loss"])}

    def unigram_baseline(self, batches: list[dict]) -> dict[str, float]:
        """The masked-token accuracy of always guessing the training split's most frequent
        non-special token, and the cross-entropy of its unigram distribution (add-one smoothed),
        on the masked tokens of `batches`."""
        counts = np.bincount(np.concatenate([s for d in self.train_docs for s in d]),
                             minlength=self.tokenizer.vocab_size).astype(np.float64)
        counts[list(self.tokenizer.special_ids)] = 0
        probs = (counts + 1) / (counts + 1).sum()
        ids = np.concatenate([b["masked_ids"][b["masked_weights"] > 0] for b in batches])
        best = int(np.argmax(counts))
        return {"unigram_accuracy": float(np.mean(ids == best)),
                "unigram_loss": float(-np.mean(np.log(probs[ids]))),
                "unigram_token": self.tokenizer.pieces([best])[0]}

    def report(self, model, say) -> dict:
        batches = self.eval_batches(process_index=0, process_count=1)
        out = {}
        if batches:
            forward = compiled_forward(model)
            sums = np.zeros(3)
            for batch in batches:
                output = forward(self.model_inputs(batch))
                _, count, metrics = self.loss(output, batch)
                sums += [float(metrics["mlm_accuracy"][0]), float(count),
                         float(metrics["mlm_loss"][0])]
            out = {"mlm_accuracy": sums[0] / sums[1], "mlm_loss": sums[2] / sums[1],
                   **self.unigram_baseline(batches)}
            say(f"masked-token accuracy on validation: {out['mlm_accuracy']:.4f} (unigram "
                f"baseline, always {out['unigram_token']!r}: {out['unigram_accuracy']:.4f}); "
                f"loss {out['mlm_loss']:.3f} nats (unigram: {out['unigram_loss']:.3f})")
        text = self.config.task.sample_text
        if text and "[MASK]" in text:
            guesses = fill_mask(model, self.tokenizer, text, top_k=5)
            shown = "; ".join(", ".join(f"{p} {q:.2f}" for p, q in g) for g in guesses)
            say(f"fill-mask {text!r}: {shown}")
            out["fill_mask"] = guesses
        return out
