"""What the fine-tuning tasks share: a labelled dataset (`jaxformer.data.labelled`) turned into
fixed-size rows once, then shuffled, repeated and batched by grain; the whole validation split
evaluated, its last batch filled with rows of weight 0.

Every row holds `tokens`, `token_types`, `segment_ids` [seq_len] (BERT's `[CLS] a [SEP] (b
[SEP])`, padding 0), `weight` (1.0, or 0.0 for filler rows) and the task's targets. A subclass
says which targets (`target_spec`) and how an example becomes a row (`featurize`).
"""

import abc
import dataclasses
import json
from typing import ClassVar

import jax
import numpy as np

from jaxformer.data import load_corpus
from jaxformer.data.labelled import load_labelled, split_examples
from jaxformer.data.pipeline import shuffled_rows
from jaxformer.data.sentence_pairs import format_pair
from jaxformer.data.sharding import ProcessShard
from jaxformer.inference import compiled_forward
from jaxformer.tasks.base import Task, TaskConfig
from jaxformer.tasks.encoder_common import (check_split, require_encoder, with_vocab_size,
                                            wordpiece_tokenizer)

LABELS_FILE = "labels.json"
INPUT_KEYS = ("tokens", "token_types", "segment_ids")


@dataclasses.dataclass
class LabelledConfig(TaskConfig):
    """dataset: a derived dataset name or a .jsonl file (see `jaxformer.data.labelled`)."""

    dataset: str = ""


class LabelledTask(Task):
    kind: ClassVar[str] = ""  # the dataset kind and the model head
    default_dataset: ClassVar[str] = ""

    def validate(self) -> None:
        require_encoder(self.config, self.name, (self.kind,))

    # --- data ---

    def prepare(self, run, say):
        config = self.config
        dataset = config.task.dataset or self.default_dataset

        class LazyCorpus:  # read the corpus only if a tokenizer must be trained from it
            def __getattr__(self, name):
                return getattr(load_corpus(config.data.corpus), name)

        self.tokenizer = wordpiece_tokenizer(config, run, LazyCorpus())
        config = with_vocab_size(config, self.tokenizer, say)
        self.data = load_labelled(dataset, self.kind, config.data.corpus)
        self.label_names = self.data.label_names
        if self.label_names and config.model.num_labels != len(self.label_names):
            say(f"model.num_labels set to {len(self.label_names)}, the dataset's labels")
            config = dataclasses.replace(config, model=config.model.replace(
                num_labels=len(self.label_names)))
        self.config = config
        train, val = split_examples(self.data.examples, config.data.val_fraction)
        self.train_rows = [r for r in map(self.featurize, train) if r is not None]
        self.val_rows = [r for r in map(self.featurize, val) if r is not None]
        check_split(self.train_rows, "training", "examples")
        check_split(self.val_rows, "validation", "examples")
        dropped = len(train) + len(val) - len(self.train_rows) - len(self.val_rows)
        say(f"{self.data.name}: {len(self.train_rows)} training and {len(self.val_rows)} "
            f"validation examples" + (f" ({dropped} dropped: answer past train.seq_len)"
                                      if dropped else "")
            + (f"; {len(self.label_names)} labels" if self.label_names else ""))
        return config

    def save_artifacts(self, run) -> None:
        if not run.tokenizer.exists():
            self.tokenizer.save(run.tokenizer)
        (run.root / LABELS_FILE).write_text(json.dumps({"labels": self.label_names}) + "\n")

    def pair_row(self, a_ids: list[int], b_ids: list[int] | None) -> dict[str, np.ndarray]:
        """The input arrays of `[CLS] a [SEP] (b [SEP])`, truncated longest-first."""
        t = self.tokenizer
        row = format_pair(a_ids, b_ids, seq_len=self.config.train.seq_len, cls_id=t.cls_id,
                          sep_id=t.sep_id, pad_id=t.pad_id)
        return {k: row[k] for k in INPUT_KEYS} | {"weight": np.float32(1.0)}

    @abc.abstractmethod
    def featurize(self, example: dict) -> dict[str, np.ndarray] | None:
        """One example's row (inputs, weight and targets), or None to drop it."""

    @abc.abstractmethod
    def target_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The targets a batch holds besides the inputs and the row weights."""

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        shape = (batch_size, self.config.train.seq_len)
        spec = {name: jax.ShapeDtypeStruct(shape, np.int32) for name in INPUT_KEYS}
        spec["weight"] = jax.ShapeDtypeStruct((batch_size,), np.float32)
        return spec | self.target_spec(batch_size)

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
        shard = ProcessShard.resolve(process_index, process_count)
        filler = {k: np.zeros_like(v) for k, v in self.val_rows[0].items()}
        rows = list(self.val_rows) + [filler] * (-len(self.val_rows) % t.batch_size)
        batches = []
        for start in range(0, len(rows), t.batch_size):
            chunk = shard.rows(rows[start:start + t.batch_size])
            batches.append({k: np.stack([r[k] for r in chunk]) for k in chunk[0]})
        return batches

    def model_inputs(self, batch: dict) -> dict:
        return {name: batch[name] for name in INPUT_KEYS}

    # --- reporting ---

    def predictions(self, model) -> list[tuple[dict, object]]:
        """(batch, ModelOutput) over the validation batches, evaluation mode."""
        forward = compiled_forward(model)
        return [(b, jax.device_get(forward(self.model_inputs(b))))
                for b in self.eval_batches(process_index=0, process_count=1)]
