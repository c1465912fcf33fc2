"""The run directory: everything needed to resume a run or sample from it.

    <run_dir>/config.yaml         the resolved config (model.vocab_size from the tokenizer)
    <run_dir>/tokenizer/          the tokenizer (tasks on text), saved at the first start
    <run_dir>/checkpoints/<step>/ orbax checkpoints: train state + data-iterator position
    <run_dir>/metrics.jsonl       one JSON object per log line / evaluation
    <run_dir>/tensorboard/        TensorBoard event files
    <run_dir>/loss.png            train and validation loss, drawn at the end
"""

import dataclasses
from pathlib import Path

import jax
from flax import nnx

from jaxformer.config import load_config
from jaxformer.errors import UserError


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


def load_run(run_dir: str | Path, *, log=print):
    """(Config, the model holding the latest intact checkpoint's variables, tokenizer or None)
    of a run; the model is of the family its config names.

    Raises UserError when the directory is not a run or holds no checkpoint yet."""
    from jaxformer.data import load_tokenizer
    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.state import abstract_train_state, model_graphdef

    run = RunDir(Path(run_dir))
    if not run.config.exists():
        raise UserError(f"{run.root} is not a run directory (no config.yaml): give the train.run_dir "
                        f"of a `jaxformer train` run")
    config = load_config(run.config)
    tokenizer = load_tokenizer(run.tokenizer) if run.tokenizer.exists() else None
    checkpointer = Checkpointer(run.checkpoints, keep=config.train.keep_checkpoints, log=log)
    try:
        state, step = checkpointer.restore_latest(abstract_train_state(config))
    finally:
        checkpointer.close()
    if state is None:
        raise UserError(f"{run.checkpoints} holds no checkpoint yet: train longer than "
                        f"train.checkpoint_every={config.train.checkpoint_every} steps, or wait "
                        f"for the run's first save")
    model = nnx.merge(model_graphdef(config), state.params, state.frozen)
    del state  # the optimizer moments are not needed for sampling
    jax.block_until_ready(nnx.state(model))
    return config, model, tokenizer
