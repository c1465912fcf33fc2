"""Training: optimizer, loss, the pure jit-compiled train step, evaluation, checkpoints, the loop.

    from jaxformer.config import load_config
    from jaxformer.train import train
    result = train(load_config("shakespeare_char_cpu", ["train.steps=200"]))
"""

from jaxformer.train.loop import NonFiniteLossError, TrainResult, train
from jaxformer.train.run_dir import RunDir, load_run
from jaxformer.train.state import TrainState, init_train_state

__all__ = ["NonFiniteLossError", "RunDir", "TrainResult", "TrainState", "init_train_state",
           "load_run", "train"]
