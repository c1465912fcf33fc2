"""The typed run config: one dataclass per section, loaded from YAML with dotted overrides.

    config = load_config("shakespeare_char_cpu", ["train.steps=500", "optimizer.lr=3e-4"])

Sections: `model` (DecoderConfig), `data` (DataConfig), `optimizer` (OptimizerConfig), `mesh`
(MeshConfig), `train` (TrainLoopConfig). A YAML file (or a preset name from `configs/`) is merged
onto the defaults, then the `key=value` overrides (OmegaConf structured configs). An unknown key or
a value of the wrong type raises `ConfigError` naming the key and its close matches, before any
work starts.

`model.vocab_size` is not the user's to choose for a run: at run start the training loop sets it
to the tokenizer's vocabulary size whenever the two differ (0 in YAML means "from the tokenizer"),
and says so. The resolved config is saved as `config.yaml` in the run directory.
"""

import dataclasses
from pathlib import Path

from omegaconf import OmegaConf

from jaxformer.data import DataConfig
from jaxformer.errors import ConfigError
from jaxformer.models.config import DecoderConfig
from jaxformer.parallel.config import MeshConfig
from jaxformer.presets import checked_merge, find_config, read_yaml

__all__ = ["Config", "OptimizerConfig", "TrainLoopConfig", "load_config", "save_config",
           "with_vocab_size"]


@dataclasses.dataclass
class OptimizerConfig:
    """AdamW with linear warmup then cosine decay (nanoGPT's schedule), global-norm clipping.

    Steps count optimizer updates: with `grad_accum_steps` = k one update takes k batches.
    `decay_steps` is where the cosine reaches `min_lr` (counted from step 0, warmup included),
    after which the rate stays at `min_lr`. `grad_clip` 0 turns clipping off. Weight decay
    applies to parameters with two or more axes only (matrices, embeddings), not to norms/biases.
    """

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


@dataclasses.dataclass
class TrainLoopConfig:
    """The loop. Every `*_every` counts optimizer steps. `batch_size` is per optimizer micro-step
    across all processes (each process loads batch_size / process_count rows).

    `resume`: null (default) continues from the run directory's latest checkpoint if there is
    one and starts fresh otherwise; true requires a checkpoint; false refuses a run directory that
    already holds checkpoints (nothing is ever overwritten or deleted).
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


@dataclasses.dataclass
class Config:
    model: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    train: TrainLoopConfig = dataclasses.field(default_factory=TrainLoopConfig)

    def __post_init__(self):
        t, o = self.train, self.optimizer
        positive = {"train.batch_size": t.batch_size, "train.seq_len": t.seq_len,
                    "train.steps": t.steps, "train.eval_every": t.eval_every,
                    "train.log_every": t.log_every, "train.checkpoint_every": t.checkpoint_every,
                    "train.keep_checkpoints": t.keep_checkpoints,
                    "optimizer.grad_accum_steps": o.grad_accum_steps, "optimizer.lr": o.lr}
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        for key, value in {"train.eval_batches": t.eval_batches, "optimizer.min_lr": o.min_lr,
                           "optimizer.warmup_steps": o.warmup_steps, "train.sample_tokens":
                           t.sample_tokens, "optimizer.grad_clip": o.grad_clip,
                           "optimizer.weight_decay": o.weight_decay}.items():
            if value < 0:
                raise ConfigError(f"{key} must not be negative, got {value}")
        if o.decay_steps <= o.warmup_steps:
            raise ConfigError(f"optimizer.decay_steps={o.decay_steps} must exceed "
                              f"optimizer.warmup_steps={o.warmup_steps}")
        if t.seq_len > self.model.max_seq_len:
            raise ConfigError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len="
                              f"{self.model.max_seq_len}: lower one or raise the other")


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
    # vocab_size 0 means "from the tokenizer"; DecoderConfig rejects 0, and the loop replaces any
    # value that differs from the tokenizer's anyway, so a placeholder of 1 stands in until then.
    if OmegaConf.select(merged, "model.vocab_size") == 0:
        merged.model.vocab_size = 1
    return checked_merge(Config, merged)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))


def with_vocab_size(config: Config, vocab_size: int) -> tuple[Config, bool]:
    """The config with `model.vocab_size` set to the tokenizer's, and whether it changed."""
    if config.model.vocab_size == vocab_size:
        return config, False
    return dataclasses.replace(config, model=config.model.replace(vocab_size=vocab_size)), True
