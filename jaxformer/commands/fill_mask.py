"""`jaxformer fill-mask`: the most likely pieces for each [MASK] in a text, with probabilities.

    jaxformer fill-mask runs/bert_shakespeare_cpu "to be, or not to [MASK]"
    jaxformer fill-mask ./bert-base-uncased "the capital of france is [MASK]." --top-k 10

The model is an encoder with a masked-LM head (a `masked_lm` run, or HF BertForMaskedLM /
BertForPreTraining); the text goes in as `[CLS] text [SEP]`.
"""

import argparse

from jaxformer.commands.encoder_source import add_source_arguments, load_encoder
from jaxformer.errors import UserError
from jaxformer.inference import fill_mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("text", help="text with one or more [MASK] tokens")
    parser.add_argument("--top-k", type=int, default=5, help="guesses per [MASK] (default: 5)")


def run(args) -> int:
    if args.top_k <= 0:
        raise UserError(f"--top-k must be positive, got {args.top_k}")
    if "[MASK]" not in args.text:
        raise UserError("the text has no [MASK] token: write [MASK] where a word should be "
                        "predicted, e.g. \"to be or not to [MASK]\"")
    model, tokenizer, _ = load_encoder(args)
    for i, guesses in enumerate(fill_mask(model, tokenizer, args.text, top_k=args.top_k)):
        print(f"[MASK] {i + 1}:")
        for piece, prob in guesses:
            print(f"  {prob:7.2%}  {piece}")
    return 0
