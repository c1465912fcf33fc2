"""`seq2seq`: an encoder-decoder learns to map a source sequence to a target (translation,
denoising, arithmetic), by teacher forcing.

Data: source/target pairs from `task.dataset` (`jaxformer/data/pair_sources.py`), padded into rows
or packed several to a row with segment ids (`jaxformer/data/pairs.py`). Loss: cross-entropy of
each target token given the source and the target's earlier tokens, with optional label smoothing
(Szegedy et al. 2016; the 2017 Transformer uses 0.1): the target distribution puts 1 - eps on the
right token and eps spread evenly over the vocabulary. Evaluation: the loss, the unsmoothed
cross-entropy (nll) and its perplexity, and token accuracy, on the held-out pairs. At the end:
held-out sources decoded greedily, and the share whose output equals the target exactly.
"""

import dataclasses

import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data import load_tokenizer
from jaxformer.data.pair_sources import pair_source
from jaxformer.data.pairs import pair_dataset
from jaxformer.data.sharding import ProcessShard
from jaxformer.errors import ConfigError
from jaxformer.generate import generate
from jaxformer.tasks.base import Task, TaskConfig, perplexity
from jaxformer.tasks.registry import register_task


@dataclasses.dataclass
class Seq2SeqConfig(TaskConfig):
    """dataset: "addition" (synthetic, in process), "span_corruption" (T5's objective on
        `data.corpus`) or a `.tsv` file of source<TAB>target lines.
    source_len / target_len: padded lengths of a row's two sides; 0 picks the dataset's own
        (addition: its longest problem; span corruption: train.seq_len inputs and the targets that
        go with them; a file: train.seq_len).
    packing: several pairs per row (segment ids keep them apart).
    label_smoothing: eps of the smoothed targets (0.1 in the 2017 Transformer).
    report_examples: held-out pairs decoded greedily at the end (exact match).
    max_digits, holdout_fraction: the addition problems (operands of 1 to max_digits digits; the
        share of all problems held out).
    noise_density, mean_noise_span_length, num_sentinels: span corruption (T5: 0.15, 3, 100).
    """

    dataset: str = "addition"
    source_len: int = 0
    target_len: int = 0
    packing: bool = False
    label_smoothing: float = 0.0
    report_examples: int = 1000
    max_digits: int = 3
    holdout_fraction: float = 0.02
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    num_sentinels: int = 100


def smoothed_cross_entropy(logits: jax.Array, targets: jax.Array, eps: float):
    """Per-token (smoothed loss, plain nll), float32: loss = (1 - eps) * nll + eps * mean over
    the vocabulary of -log p, the cross-entropy against (1 - eps) one-hot + eps / vocab."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if not eps:
        return nll, nll
    return (1.0 - eps) * nll - eps * jnp.mean(log_probs, axis=-1), nll


@register_task
class Seq2Seq(Task):
    name = "seq2seq"
    config_class = Seq2SeqConfig

    def validate(self) -> None:
        t, m = self.config.task, self.config.model
        if not getattr(m, "is_encoder_decoder", False):
            raise ConfigError(f"task seq2seq trains an encoder-decoder, but model.family is "
                              f"{m.family!r}: use model.family=encoder_decoder")
        if not 0.0 <= t.label_smoothing < 1.0:
            raise ConfigError(f"task.label_smoothing must be in [0, 1), got {t.label_smoothing}")
        for key in ("source_len", "target_len", "report_examples", "num_sentinels"):
            if getattr(t, key) < 0:
                raise ConfigError(f"task.{key} must not be negative, got {getattr(t, key)}")
        if t.max_digits < 1:
            raise ConfigError(f"task.max_digits must be at least 1, got {t.max_digits}")
        if not 0.0 < t.holdout_fraction < 1.0:
            raise ConfigError(f"task.holdout_fraction must be in (0, 1), got {t.holdout_fraction}")
        if t.dataset not in ("addition", "span_corruption") and not t.dataset.endswith(".tsv"):
            raise ConfigError(f"task.dataset={t.dataset!r}: use addition, span_corruption or a "
                              f".tsv file of source<TAB>target lines")

    def prepare(self, run, say):
        config, t = self.config, self.config.train
        saved = load_tokenizer(run.tokenizer) if run.tokenizer.exists() else None
        self.source = source = pair_source(config.task, config.data, seq_len=t.seq_len,
                                           seed=t.seed, tokenizer=saved)
        tokenizer = self.tokenizer = source.tokenizer
        # T5 starts the decoder with pad; a vocabulary without one starts it with the end token.
        start = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
        changes = {}
        if config.model.vocab_size != source.vocab_size:
            say(f"model.vocab_size set to {source.vocab_size}, the tokenizer's vocabulary"
                + (f" and {config.task.num_sentinels} sentinels"
                   if source.vocab_size != tokenizer.vocab_size else ""))
            changes["vocab_size"] = source.vocab_size
        if start is not None and config.model.decoder_start_token_id != start:
            say(f"model.decoder_start_token_id set to {start}")
            changes["decoder_start_token_id"] = start
        if changes:
            config = dataclasses.replace(config, model=config.model.replace(**changes))
        longest = max(source.source_len, source.target_len)
        if longest > config.model.max_seq_len:
            raise ConfigError(f"rows of {longest} tokens exceed model.max_seq_len="
                              f"{config.model.max_seq_len}: raise it or shorten the rows")
        self.config = config
        return config

    def save_artifacts(self, run) -> None:
        if not run.tokenizer.exists():
            self.tokenizer.save(run.tokenizer)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        s, t = self.source.source_len, self.source.target_len
        spec = {name: jax.ShapeDtypeStruct((batch_size, s), np.int32)
                for name in ("tokens", "segment_ids", "positions")}
        spec |= {name: jax.ShapeDtypeStruct((batch_size, t), np.int32)
                 for name in ("decoder_tokens", "targets", "decoder_segment_ids",
                              "decoder_positions")}
        spec["loss_mask"] = jax.ShapeDtypeStruct((batch_size, t), np.float32)
        return spec

    def tokens_per_batch(self, batch_size: int) -> int:
        return batch_size * (self.source.source_len + self.source.target_len)

    def _dataset(self, examples, *, process_index, process_count, train: bool):
        c = self.config
        endless = train and self.source.endless
        return pair_dataset(
            examples, batch_size=c.train.batch_size, source_len=self.source.source_len,
            target_len=self.source.target_len, start_id=c.model.decoder_start_token_id,
            shard=ProcessShard.resolve(process_index, process_count), packing=c.task.packing,
            seed=c.train.seed, shuffle=train and not endless, repeat=not endless,
            transform=self.source.transform if train else None)

    def train_iterator(self, *, process_index: int, process_count: int):
        return iter(self._dataset(self.source.train, process_index=process_index,
                                  process_count=process_count, train=True))

    def eval_batches(self, *, process_index: int, process_count: int) -> list[dict]:
        count = self.config.train.eval_batches
        if not count or not self.source.heldout:
            return []
        iterator = iter(self._dataset(grain.MapDataset.source(self.source.heldout),
                                      process_index=process_index, process_count=process_count,
                                      train=False))
        return [next(iterator) for _ in range(count)]

    def model_inputs(self, batch: dict) -> dict:
        inputs = {"tokens": batch["tokens"], "decoder_tokens": batch["decoder_tokens"],
                  "segment_ids": batch["segment_ids"],
                  "decoder_segment_ids": batch["decoder_segment_ids"]}
        if self.config.task.packing:
            inputs |= {"positions": batch["positions"],
                       "decoder_positions": batch["decoder_positions"]}
        return inputs

    def loss(self, output, batch):
        mask = batch["loss_mask"].astype(jnp.float32)
        loss, nll = smoothed_cross_entropy(output.logits, batch["targets"],
                                           self.config.task.label_smoothing)
        correct = (jnp.argmax(output.logits, axis=-1) == batch["targets"]).astype(jnp.float32)
        count = jnp.sum(mask)
        return (jnp.sum(loss * mask), count,
                {"nll": (jnp.sum(nll * mask), count), "accuracy": (jnp.sum(correct * mask), count)})

    def eval_summary(self, means: dict[str, float]) -> dict[str, float]:
        return {**super().eval_summary(means), "val_ppl": perplexity(means["nll"])}

    def report(self, model, say) -> dict:
        """Held-out sources decoded greedily; exact match against their targets."""
        examples = self.source.heldout
        if not examples:
            return {}
        eos = self.tokenizer.eos_id
        new_tokens = self.source.target_len
        outputs = []
        for start in range(0, len(examples), 256):
            chunk = examples[start:start + 256]
            outputs += generate(model, [e["inputs"].tolist() for e in chunk], new_tokens,
                                temperature=0.0, stop_tokens=[eos])
        exact = [out == e["targets"].tolist() for out, e in zip(outputs, examples)]
        score = float(np.mean(exact))
        decode = self.tokenizer.decode
        say(f"held-out exact match (greedy): {score:.4f} ({sum(exact)} of {len(exact)})")
        for e, out in list(zip(examples, outputs))[:3]:
            say(f"  {decode(e['inputs'])!r} -> {decode(out)!r} (target {decode(e['targets'])!r})")
        return {"exact_match": score, "examples": len(exact)}
