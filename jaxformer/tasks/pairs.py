"""What the preference tasks (`reward`, `dpo`) share: pairs of answers read or derived once
(`jaxformer.data.preference`), tokenized with the run's tokenizer into one row per pair, then
shuffled, repeated and batched by grain; the whole validation split evaluated, its last batch
filled with rows of weight 0.

A batch holds, for each pair, `tokens`, `targets`, `segment_ids` (int32) and `loss_mask`
(float32), each [batch, 2, seq_len] (index 0 the chosen answer, 1 the rejected one), and `weight`
[batch] (1.0, or 0.0 for filler rows). The model sees the answers as [2 * batch, seq_len] rows,
chosen and rejected of a pair next to each other.
"""

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from jaxformer.data import build_tokenizer, load_corpus, load_tokenizer
from jaxformer.data.labelled import split_examples
from jaxformer.data.pipeline import shuffled_rows
from jaxformer.data.preference import (RECIPE, encode_pairs, read_preferences,
                                       shakespeare_no_e_pairs, write_preferences)
from jaxformer.data.sharding import ProcessShard
from jaxformer.errors import ConfigError, UserError
from jaxformer.tasks.base import Task, TaskConfig

ROW_KEYS = ("tokens", "targets", "segment_ids")
TRAIN_FILE, VAL_FILE = "preferences_train.jsonl", "preferences_val.jsonl"


@dataclasses.dataclass
class PairsConfig(TaskConfig):
    """dataset: "shakespeare-no-e" (pairs derived from Tiny Shakespeare, see
    `jaxformer.data.preference`; both splits are written into the run directory as
    preferences_train.jsonl and preferences_val.jsonl) or a .jsonl file of pairs (the last
    `data.val_fraction` of them, after a fixed shuffle, held out).
    num_pairs: how many pairs the derived dataset has."""

    dataset: str = RECIPE
    num_pairs: int = 2400


class PairsTask(Task):
    head: ClassVar[str] = "lm"  # the decoder head the task needs

    def validate(self) -> None:
        m, t = self.config.model, self.config.train
        if getattr(m, "family", None) != "decoder":
            raise ConfigError(f"task.name={self.name} trains a decoder (model.family=decoder), "
                              f"not a {m.family} model")
        if m.head != self.head:
            raise ConfigError(f"task.name={self.name} needs model.head={self.head} (now "
                              f"{m.head!r})")
        if t.seq_len > m.max_seq_len:
            raise ConfigError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len="
                              f"{m.max_seq_len}: lower one or raise the other")
        if self.config.task.num_pairs < 2:
            raise ConfigError("task.num_pairs must be at least 2 (a training and a validation "
                              "pair)")

    # --- data ---

    def prepare(self, run, say):
        config = self.config
        t = config.task
        self.tokenizer = (load_tokenizer(run.tokenizer) if run.tokenizer.exists()
                          else build_tokenizer(config.data, load_corpus(config.data.corpus)))
        vocab_size = self.tokenizer.vocab_size
        if config.model.vocab_size != vocab_size:
            say(f"model.vocab_size set to {vocab_size}, the tokenizer's vocabulary size")
            config = dataclasses.replace(config, model=config.model.replace(vocab_size=vocab_size))
        self.config = config
        self.derived = t.dataset == RECIPE
        if self.derived:
            corpus = load_corpus(config.data.corpus)
            if not corpus.is_single_text:
                raise UserError(f"{RECIPE} is derived from a play script like Tiny Shakespeare; "
                                f"data.corpus={config.data.corpus!r} has "
                                f"{len(corpus.documents)} documents")
            pairs = shakespeare_no_e_pairs(corpus.text, t.num_pairs)
            source = RECIPE
        else:
            path = t.dataset
            if not path.endswith(".jsonl"):
                raise UserError(f"task.dataset={path!r} is neither {RECIPE!r} nor a .jsonl file")
            pairs = read_preferences(path)
            source = path
        self.train_pairs, self.val_pairs = split_examples(pairs, config.data.val_fraction)
        seq_len = config.train.seq_len
        self.train_rows = encode_pairs(self.tokenizer, self.train_pairs, seq_len, source)
        self.val_rows = encode_pairs(self.tokenizer, self.val_pairs, seq_len, source)
        say(f"{source}: {len(self.train_rows)} training and {len(self.val_rows)} validation "
            f"pairs")
        return config

    def save_artifacts(self, run) -> None:
        if not run.tokenizer.exists():
            self.tokenizer.save(run.tokenizer)
        if self.derived:
            write_preferences(run.root / TRAIN_FILE, self.train_pairs)
            write_preferences(run.root / VAL_FILE, self.val_pairs)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        shape = (batch_size, 2, self.config.train.seq_len)
        spec = {name: jax.ShapeDtypeStruct(shape, np.int32) for name in ROW_KEYS}
        spec["loss_mask"] = jax.ShapeDtypeStruct(shape, np.float32)
        spec["weight"] = jax.ShapeDtypeStruct((batch_size,), np.float32)
        return spec

    def tokens_per_batch(self, batch_size: int) -> int:
        return 2 * batch_size * self.config.train.seq_len

    def train_iterator(self, *, process_index: int, process_count: int):
        t = self.config.train
        return shuffled_rows(self.train_rows, self.config.data, t.seed, t.batch_size,
                             ProcessShard.resolve(process_index, process_count))

    def eval_batches(self, *, process_index: int, process_count: int) -> list[dict]:
        """The whole validation split (this process's rows of each batch), when
        `train.eval_batches` is not 0."""
        t = self.config.train
        if not t.eval_batches:
            return []
        return pair_batches(self.val_rows, t.batch_size,
                            ProcessShard.resolve(process_index, process_count))

    def rows_of(self, batch: dict, name: str) -> jax.Array:
        """A [batch, 2, ...] entry as [2 * batch, ...] model rows."""
        x = batch[name]
        return x.reshape((-1, *x.shape[2:]))


def pair_batches(rows: list[dict], batch_size: int, shard: ProcessShard | None = None
                 ) -> list[dict]:
    """Rows in batches of `batch_size`, the last one filled with zero rows (weight 0)."""
    filler = {k: np.zeros_like(v) for k, v in rows[0].items()}
    rows = list(rows) + [filler] * (-len(rows) % batch_size)
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        if shard is not None:
            chunk = shard.rows(chunk)
        batches.append({k: np.stack([r[k] for r in chunk]) for k in chunk[0]})
    return batches
