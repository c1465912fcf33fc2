"""The encoder commands' common start: the model, its WordPiece tokenizer and its label names
from a `jaxformer train` run directory or a HuggingFace BERT directory."""

import argparse
import json
from pathlib import Path

from jaxformer.errors import UserError
from jaxformer.sources import load_source


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR_OR_HF_DIR",
                        help="a `jaxformer train` run directory of an encoder, or a HuggingFace "
                             "BERT directory (config.json, model.safetensors, vocab.txt)")
    parser.add_argument("--tokenizer", metavar="PATH", default=None,
                        help="a WordPiece vocab.txt (or a directory holding one), overriding "
                             "the one found next to the model")


def label_names(path: Path, num_labels: int) -> list[str]:
    """A run's labels.json, an HF config.json's id2label, or LABEL_0 ... LABEL_{n-1}."""
    labels_file, hf_config = path / "labels.json", path / "config.json"
    names = None
    if labels_file.is_file():
        names = json.loads(labels_file.read_text()).get("labels")
    elif hf_config.is_file():
        id2label = json.loads(hf_config.read_text()).get("id2label") or {}
        names = [id2label.get(str(i)) for i in range(num_labels)]
    if not names or len(names) != num_labels or None in names:
        names = [f"LABEL_{i}" for i in range(num_labels)]
    return names


def load_encoder(args) -> tuple:
    """(model, tokenizer, label names) for the command's SOURCE; one-line errors otherwise."""
    source = load_source(args.source, tokenizer=args.tokenizer)
    model, tokenizer = source.model, source.tokenizer
    if getattr(model.config, "family", None) != "encoder":
        raise UserError(f"{args.source} holds a {model.config.family} model: this command needs "
                        f"an encoder (BERT)")
    if tokenizer is None or not hasattr(tokenizer, "mask_id"):
        raise UserError(f"{args.source} has no WordPiece tokenizer (vocab.txt): pass --tokenizer "
                        f"PATH/vocab.txt")
    return model, tokenizer, label_names(Path(args.source), model.config.num_labels)
