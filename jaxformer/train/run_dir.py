"""The run directory: everything needed to resume a run or sample from it.

    <run_dir>/config.yaml         the resolved config (model.vocab_size from the tokenizer)
    <run_dir>/tokenizer/          the tokenizer (tasks on text), saved at the first start
    <run_dir>/checkpoints/<step>/ orbax checkpoints: train state + data-iterator position
    <run_dir>/metrics.jsonl       one JSON object per log line / evaluation
    <run_dir>/tensorboard/        TensorBoard event files
    <run_dir>/loss.png            train and validation loss, drawn at the end
    <run_dir>/adapter/            a LoRA run's adapter alone, in peft's layout, at the end

A rerun checks the saved config and the checkpoints before it writes anything: `config.yaml` and
the tokenizer are (re)written by process 0 only once the run is known to be able to start.
"""

import dataclasses
import os
from pathlib import Path

import jax
from flax import nnx
from omegaconf import OmegaConf

from jaxformer.config import Config, load_config, save_config
from jaxformer.data import load_tokenizer
from jaxformer.errors import ConfigError, UserError
from jaxformer.interop.adapters import save_adapter
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.state import abstract_train_state, model_graphdef


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def plot(self) -> Path:
        return self.root / "loss.png"


def saved_config(run: RunDir) -> Config:
    """The run's config.yaml, or a UserError that blames that file (not the checkpoints)."""
    try:
        return load_config(run.config)
    except ConfigError as e:
        raise ConfigError(f"the run's config {run.config} cannot be used ({e}): restore it from "
                          f"a copy, or start a fresh run with a new train.run_dir") from None


def config_changes(saved: Config, config: Config, sections=("model", "data", "optimizer")) -> list[str]:
    """'optimizer.grad_clip: 1.0 in the run, 0.0 now' for every key that differs."""
    def flat(c: Config, section: str) -> dict:
        values = OmegaConf.to_container(OmegaConf.structured(getattr(c, section)), resolve=True)
        out = {}
        for key, value in values.items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    changes = []
    for section in sections:
        before, now = flat(saved, section), flat(config, section)
        changes += [f"{section}.{key}: {before.get(key)!r} in the run, {now.get(key)!r} now"
                    for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    return changes


def check_same_run(run: RunDir, config: Config) -> None:
    """A rerun must keep the model, task, data and finetune sections of the saved config (its
    checkpoints and tokenizer depend on them): a ConfigError naming each changed key otherwise."""
    if not run.config.exists():
        return
    changes = config_changes(saved_config(run), config, ("model", "task", "data", "finetune"))
    if changes:
        raise ConfigError(
            f"{run.root} holds a run whose config differs: {'; '.join(changes)}. Its checkpoints "
            f"cannot continue with this config; nothing was changed. Rerun with the run's own "
            f"config ({run.config}), or start a fresh run with a new train.run_dir")


def optimizer_changes(run: RunDir, config: Config) -> str:
    """' (the run's config.yaml differs: optimizer.grad_clip: ...)', to explain a checkpoint
    whose optimizer state has another structure; '' when nothing differs."""
    if not run.config.exists():
        return ""
    changes = config_changes(saved_config(run), config, ("optimizer",))
    return f" (the run's config.yaml differs: {'; '.join(changes)})" if changes else ""


def ensure_writable(run: RunDir) -> None:
    """A one-line UserError, before any work, when the run directory cannot be written."""
    probe = run.root / f".jaxformer-write-test-{os.getpid()}"
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the run directory {run.root} ({e.strerror or e}): make "
                        f"it writable, or choose another train.run_dir") from None


def write_run_files(run: RunDir, config: Config, task) -> None:
    """config.yaml and the task's artifacts (at the first start, a tokenizer), by process 0: called
    once the run is known to be able to start, so a refused rerun leaves the directory as it was."""
    if jax.process_index() != 0:
        return
    task.save_artifacts(run)
    save_config(config, run.config)


def write_adapter(run: RunDir, model, config: Config, say) -> None:
    """After training, by process 0: a LoRA run writes its adapter alone, in peft's layout."""
    if config.finetune.mode != "lora" or jax.process_index() != 0:
        return
    target = run.root / "adapter"
    save_adapter(target, model, config.model, overwrite=True,
                 base_model=str(config.finetune.base or config.train.init_from or ""))
    say(f"LoRA adapter (peft layout): {target}")


def load_run(run_dir: str | Path, *, log=print):
    """(Config, the model holding the latest usable checkpoint's variables, tokenizer or None)
    of a run; the model is of the family its config names. Only the model's variables are read
    (not the optimizer state), and nothing in the run is written.

    Raises UserError when the directory is not a run or holds no checkpoint yet."""
    run = RunDir(Path(run_dir))
    if not run.config.exists():
        raise UserError(f"{run.root} is not a run directory (no config.yaml): give the train.run_dir "
                        f"of a `jaxformer train` run")
    config = saved_config(run)
    tokenizer = load_tokenizer(run.tokenizer) if run.tokenizer.exists() else None
    if not run.checkpoints.is_dir():
        raise UserError(f"{run.checkpoints} does not exist: the run has not saved a checkpoint")
    checkpointer = Checkpointer(run.checkpoints, keep=config.train.keep_checkpoints, log=log,
                                read_only=True)
    try:
        variables, step = checkpointer.restore_variables(abstract_train_state(config))
    finally:
        checkpointer.close()
    if variables is None:
        raise UserError(f"{run.checkpoints} holds no checkpoint yet: train longer than "
                        f"train.checkpoint_every={config.train.checkpoint_every} steps, or wait "
                        f"for the run's first save")
    model = nnx.merge(model_graphdef(config), variables["params"], variables["frozen"])
    jax.block_until_ready(nnx.state(model))
    return config, model, tokenizer
