"""`jaxformer train CONFIG [key=value ...]`: train from a preset or YAML file, resuming if the run
directory holds a checkpoint."""

import argparse
import logging
import signal
import sys

from jaxformer.config import load_config
from jaxformer.parallel import initialize
from jaxformer.train import train
from jaxformer.train.host import restart_with_malloc_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a preset name from configs/ (shakespeare_char_cpu) or a "
                                       "YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. train.steps=500 optimizer.lr=3e-4 "
                             "train.run_dir=runs/mine")


def run(args: argparse.Namespace) -> int:
    # Config errors surface here, before any work.
    config = load_config(args.config, args.overrides)
    restart_with_malloc_settings()  # once, before any array exists; see jaxformer/train/host.py
    # Join a multi-process run (TPU pod, SLURM, launch_local.py): before any compute.
    initialize(timeout_s=config.mesh.init_timeout_s)
    show_attention_choices()
    result = train(config)
    if result.stopped_by:  # shell convention for "ended by signal N", after a clean save
        return 128 + signal.Signals[result.stopped_by].value
    return 0


def show_attention_choices() -> None:
    """The attention kernel `attention_impl=auto` picks, and any fallback with its reason, go to
    the run log (stdout) when the step is first compiled (nn/attention_kernels.py)."""
    logger = logging.getLogger("jaxformer.attention")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
