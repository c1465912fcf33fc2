"""The `jaxformer` command. Each subcommand lives in `jaxformer/commands/<name>.py` and provides
`add_arguments(parser)` and `run(args) -> int`."""

import argparse
import importlib
import os
import sys

from jaxformer.errors import UserError

# name -> (module, one-line help)
COMMANDS = {
    "info": ("jaxformer.commands.info", "parameter count, sizes and FLOPs of a model config"),
    "train": ("jaxformer.commands.train", "train a model from a config, resuming if possible"),
    "generate": ("jaxformer.commands.generate", "sample text from a run directory or HF checkpoint"),
    "tokens": ("jaxformer.commands.tokens", "show how a tokenizer splits a text"),
    "attention": ("jaxformer.commands.attention", "plot attention patterns for a text (or an image's caption)"),
    "fill-mask": ("jaxformer.commands.fill_mask", "guess the [MASK] tokens of a text (encoders)"),
    "classify": ("jaxformer.commands.classify", "label texts with a fine-tuned encoder"),
    "embed": ("jaxformer.commands.embed", "sentence embeddings from an encoder (mean pooling)"),
    "reward": ("jaxformer.commands.reward", "score pairs of answers with a reward model, and its pair accuracy"),
    "transcribe": ("jaxformer.commands.transcribe", "greedy transcripts of WAV files from a speech recognition run"),
    "cascade": ("jaxformer.commands.cascade", "FrugalGPT cascade of trained models under a cost budget"),
    "plan": ("jaxformer.commands.plan", "compile the ways to lay a run out on a TPU slice and pick the fastest that fits"),
    "compile": ("jaxformer.commands.compile", "compile a run's program for a TPU slice and report memory, collectives, speed"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxformer", description="Transformer models in JAX/Flax: train, sample, inspect.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # a command not built yet
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the `jaxformer` command reads it (exits 2 on a bad one)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse matches a trailing positional list only once: `CONFIG --flag X key=value` leaves
    # the key=value overrides over; they belong to the command's overrides.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        return int(args.run(args) or 0)
    except (UserError, OSError) as e:  # OSError: a file that cannot be read or written
        if os.environ.get("JAXFORMER_DEBUG"):
            raise
        print(f"jaxformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
