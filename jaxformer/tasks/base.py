"""The task protocol: what a run trains a model to do, written once for every family.

A task says which batches it needs, how to get them, how to score the model's `ModelOutput` on
them, and what to show when the run ends. The train step, the evaluation loop, the data-pipeline
choice and checkpoints are written against this class only (`jaxformer/train/`), so a new family
or objective plugs in by subclassing `Task` and registering it:

    @register_task
    class Classification(Task):
        name = "classification"
        ...

Losses come back as sums with their counts, never as means: adding sums over micro-batches (and
devices) and dividing once keeps gradient accumulation and evaluation exactly weighted however many
real tokens each batch holds.
"""

import abc
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

# A metric as (sum, count): accuracy is (correct, predictions), averaged only when reported.
Metric = tuple[jax.Array, jax.Array]


@dataclasses.dataclass
class TaskConfig:
    """The `task:` section of a run config. Tasks with settings of their own subclass it.

    name: the registered task ("causal_lm", ...); empty means the model family's default task.
    aux_weights: weight of each auxiliary loss a model reports in `ModelOutput.aux` (by name);
        a name not listed weighs 1.0. The training objective is the task loss plus
        sum(weight * aux).
    """

    name: str = ""
    aux_weights: dict[str, float] = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
    """Subclasses set `name` (and `config_class` when they have settings) and implement the
    abstract methods. `self.config` is the whole run config (model, data, task, ...)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = TaskConfig
    # A task that compares the model with its starting weights (DPO's reference) sets this: the
    # training loop then calls `set_reference` once, after `prepare` and before any batch.
    needs_reference: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config

    # --- before any work (host side) ---

    def validate(self) -> None:
        """Raise ConfigError for settings this task cannot run with. Called at config load."""

    @abc.abstractmethod
    def prepare(self, run: Any, say: Callable[[str], None]) -> Any:
        """Load what the data needs (corpus, tokenizer, ...) and return the resolved run config
        (e.g. `model.vocab_size` from the tokenizer). `run` is the run directory (a
        `jaxformer.train.RunDir`): a task may read artifacts a previous start saved there and
        must save new ones with `save_artifacts`."""

    def set_reference(self, model: Any) -> None:
        """Given the plain model holding the run's starting weights (`train.init_from` or
        `finetune.base`; no LoRA or other rewrite), once, when `needs_reference` is set: the task
        takes from it what its batches need, and keeps no reference to it."""

    def save_artifacts(self, run: Any) -> None:
        """Write what sampling from the run later needs (a tokenizer). Process 0 only."""

    # --- data (host side) ---

    @abc.abstractmethod
    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The arrays a batch holds: name -> shape (global batch) and dtype."""

    @abc.abstractmethod
    def train_iterator(self, *, process_index: int, process_count: int) -> Iterator[dict]:
        """An endless iterator of this process's rows of each training batch (numpy arrays),
        checkpointable (`get_state` / `set_state`, as grain's iterators)."""

    def eval_batches(self, *, process_index: int, process_count: int) -> list[dict]:
        """A fixed list of evaluation batches (this process's rows); empty for none."""
        return []

    def tokens_per_batch(self, batch_size: int) -> int:
        """Tokens one batch of `batch_size` rows trains on (for tokens/s and MFU)."""
        return batch_size * self.config.train.seq_len

    # --- the model (traced inside jit) ---

    @abc.abstractmethod
    def model_inputs(self, batch: dict) -> dict:
        """The model call's keyword arguments from a batch."""

    @abc.abstractmethod
    def loss(self, output: Any, batch: dict) -> tuple[jax.Array, jax.Array, dict[str, Metric]]:
        """(loss summed over the scored items, how many were scored, {name: (sum, count)}) from
        a `ModelOutput`, all float32 scalars."""

    # --- reporting (host side) ---

    def eval_summary(self, means: dict[str, float]) -> dict[str, float]:
        """Evaluation record from the means over the evaluation batches ("loss" and each
        metric): by default each prefixed with "val_"."""
        return {f"val_{name}": value for name, value in means.items()}

    def report(self, model: Any, say: Callable[[str], None]) -> dict:
        """What the run shows when it ends (a sample, an accuracy, a table); the returned dict
        lands in `TrainResult.report`."""
        return {}


def mean(metric: Metric) -> jax.Array:
    total, count = metric
    return total / jnp.maximum(count, 1.0)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 80.0))
