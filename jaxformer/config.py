"""The typed run config: one dataclass per section, loaded from YAML with dotted overrides.

    config = load_config("shakespeare_char_cpu", ["train.steps=500", "optimizer.lr=3e-4"])

Sections: `model` (the config dataclass of the family `model.family` names; "decoder", a GPT-2 /
Llama language model, by default), `task` (the config of the task `task.name` names; empty: the family's
default task), `data` (DataConfig), `optimizer` (OptimizerConfig), `mesh` (MeshConfig), `train`
(TrainLoopConfig), `finetune` (FinetuneConfig: LoRA, soft prompts, partial modes, a base to start
from; a mode other than `full` sets `train.trainable` unless the config sets it). A YAML file (or
a preset name from `configs/`) is merged onto the defaults, then the `key=value` overrides
(OmegaConf structured configs). An unknown key or a value of the wrong type raises `ConfigError`
naming the key and its close matches, before any work starts.

`model.vocab_size` is not the user's to choose for a language-model run: at run start the task
sets it to the tokenizer's vocabulary size whenever the two differ (0 in YAML means "from the
tokenizer"), and says so. The resolved config is saved as `config.yaml` in the run directory.
"""

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jaxformer.data import DataConfig
from jaxformer.errors import ConfigError
from jaxformer.finetune.config import FinetuneConfig
from jaxformer.models import get_family
from jaxformer.parallel.config import MeshConfig
from jaxformer.presets import checked_merge, find_config, read_yaml
from jaxformer.tasks import TaskConfig, get_task

SCHEDULES = ("cosine", "rsqrt")

__all__ = ["Config", "OptimizerConfig", "TrainLoopConfig", "load_config", "save_config"]


@dataclasses.dataclass
class OptimizerConfig:
    """AdamW with linear warmup then cosine decay (nanoGPT's schedule), global-norm clipping.

    Steps count optimizer updates: with `grad_accum_steps` = k one update takes k batches, and
    its gradient is that of the loss over all k batches' scored tokens together (exactly as one
    batch k times larger). `decay_steps` is where the cosine reaches `min_lr` (counted from step
    0, warmup included), after which the rate stays at `min_lr`. `grad_clip` 0 turns clipping
    off.

    `schedule`: "cosine" (the above) or "rsqrt", the 2017 Transformer's: linear warmup to `lr`
    at `warmup_steps`, then decay as 1/sqrt(step) (`min_lr` and `decay_steps` unused). With
    lr = d_model^-0.5 * warmup_steps^-0.5 it is the paper's
    d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), steps counted from 1.

    `weight_decay_params`: which parameters get weight decay, as glob patterns over their paths
    ("layers/0/attention/query/kernel", "embed/embedding", "position_embedding/embedding"). The
    default decays every weight matrix and every embedding table, token and position tables alike
    (as nanoGPT and HF's Trainer do), and leaves biases and norm scales alone.
    """

    schedule: str = "cosine"  # cosine | rsqrt
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    decay_steps: int = 5000
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    weight_decay_params: list[str] = dataclasses.field(
        default_factory=lambda: ["*kernel", "*embedding"])
    # "dynamic": float16 training's loss scaling (skip overflowing steps, adapt the scale;
    # jaxformer/train/loss_scale.py). "none" for float32 / bfloat16.
    loss_scale: str = "none"


@dataclasses.dataclass
class TrainLoopConfig:
    """The loop. Every `*_every` counts optimizer steps. `batch_size` is per optimizer micro-step
    across all processes (each process loads batch_size / process_count rows).

    `resume`: null (default) continues from the run directory's latest checkpoint if there is
    one and starts fresh otherwise; true requires a checkpoint; false refuses a run directory that
    already holds checkpoints (nothing is ever overwritten or deleted).

    `trainable`: which of the model's variables the optimizer updates. Each entry is an NNX
    variable type ("Param", "LoRAParam", ...: every variable of that type or a subclass) or a
    glob pattern over parameter paths ("lm_head/*", "layers/1[01]/*": the `nnx.Param`s whose path
    matches). Everything else is frozen: no gradient, no optimizer state.

    `init_from`: a run directory or HuggingFace model directory whose weights start a fresh run
    (fine-tuning), as `finetune.base` does: parameters with the same path take its values, new
    ones the run trains start fresh (the rules: `jaxformer.train.warm_start`). Ignored when the
    run resumes from its own checkpoint.
    """

    batch_size: int = 12
    seq_len: int = 64
    steps: int = 2000
    eval_every: int = 250
    eval_batches: int = 20
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    seed: int = 1337
    run_dir: str = "runs/default"
    resume: bool | None = None
    sample_tokens: int = 200  # characters/tokens generated after training; 0: no sample
    sample_prompt: str = "\n"
    sample_temperature: float = 0.8
    sample_top_k: int | None = 200
    progress: bool = True  # the progress bar (process 0 only)
    trainable: list[str] = dataclasses.field(default_factory=lambda: ["Param"])
    # Optimizer steps per compiled call: n > 1 runs n steps in one dispatch (a lax.scan), which
    # takes the per-call host overhead out of small models' steps; the updates are the same.
    steps_per_call: int = 1
    init_from: str | None = None
    # A jax.profiler trace of `profile_steps` steps after `profile_start` (0: none), written to
    # run_dir/profile (jaxformer/train/profile.py says how to open it).
    profile_steps: int = 0
    profile_start: int = 10


@dataclasses.dataclass
class Config:
    # The config class of the family `model.family` names; by default the decoder's.
    model: Any = dataclasses.field(default_factory=lambda: get_family("decoder").config_class())
    task: Any = dataclasses.field(default_factory=lambda: TaskConfig(name="causal_lm"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    train: TrainLoopConfig = dataclasses.field(default_factory=TrainLoopConfig)
    # How the built model is rewritten and where its weights start (jaxformer/finetune/config.py).
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)

    def __post_init__(self):
        t, o = self.train, self.optimizer
        positive = {"train.batch_size": t.batch_size, "train.seq_len": t.seq_len,
                    "train.steps": t.steps, "train.eval_every": t.eval_every,
                    "train.log_every": t.log_every, "train.checkpoint_every": t.checkpoint_every,
                    "train.keep_checkpoints": t.keep_checkpoints,
                    "train.steps_per_call": t.steps_per_call,
                    "optimizer.grad_accum_steps": o.grad_accum_steps, "optimizer.lr": o.lr}
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        for key, value in {"train.eval_batches": t.eval_batches, "optimizer.min_lr": o.min_lr,
                           "optimizer.warmup_steps": o.warmup_steps, "train.sample_tokens":
                           t.sample_tokens, "train.profile_steps": t.profile_steps,
                           "train.profile_start": t.profile_start, "optimizer.grad_clip": o.grad_clip,
                           "optimizer.weight_decay": o.weight_decay}.items():
            if value < 0:
                raise ConfigError(f"{key} must not be negative, got {value}")
        if o.schedule not in SCHEDULES:
            raise ConfigError(f"optimizer.schedule={o.schedule!r} is not one of {list(SCHEDULES)}")
        if o.schedule == "rsqrt" and o.warmup_steps <= 0:
            raise ConfigError("optimizer.schedule=rsqrt needs optimizer.warmup_steps > 0 (the "
                              "2017 Transformer warms up over 4000 steps)")
        if o.loss_scale not in ("none", "dynamic"):
            raise ConfigError(f"optimizer.loss_scale={o.loss_scale!r} is not one of "
                              f"['none', 'dynamic']")
        if o.decay_steps <= o.warmup_steps:
            raise ConfigError(f"optimizer.decay_steps={o.decay_steps} must exceed "
                              f"optimizer.warmup_steps={o.warmup_steps}")
        if not t.trainable:
            raise ConfigError("train.trainable is empty: list what the optimizer updates, e.g. "
                              "[Param] for everything")
        self.finetune.resolve(self)  # checks across sections; the mode's train.trainable

    def replace(self, **sections) -> "Config":
        return dataclasses.replace(self, **sections)


def load_config(path_or_preset: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The defaults, then the YAML file or preset (if given), then `key=value` overrides."""
    sources = []
    if path_or_preset is not None:
        sources.append(read_yaml(find_config(path_or_preset)))
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value "
                              f"(e.g. train.steps=100)")
    if overrides:
        sources.append(OmegaConf.from_dotlist(list(overrides)))
    merged = OmegaConf.merge(*sources) if sources else OmegaConf.create({})
    return config_from_dict(merged)


def config_from_dict(merged: DictConfig | dict) -> Config:
    """A typed `Config` from nested dicts (what a YAML file holds): `model.family` picks the model
    config class, `task.name` (or the family's default task) the task config class."""
    merged = OmegaConf.create(merged) if isinstance(merged, dict) else merged
    family = get_family(OmegaConf.select(merged, "model.family") or "decoder")
    task_name = OmegaConf.select(merged, "task.name") or family.default_task
    task_class = get_task(task_name)
    merged = OmegaConf.merge(merged, {"task": {"name": task_name}})
    # vocab_size 0 means "from the tokenizer"; the configs reject 0, and the task replaces any
    # value that differs from the tokenizer's anyway, so a placeholder of 1 stands in until then.
    if OmegaConf.select(merged, "model.vocab_size") == 0:
        merged.model.vocab_size = 1
    schema = Config(model=family.config_class(), task=task_class.config_class(name=task_name))
    config = checked_merge(schema, merged)
    task_class(config).validate()
    return config


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
