"""`jaxformer tokens`: show how a tokenizer splits a text, each token coloured, with its id."""

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from jaxformer.data import DataConfig, build_tokenizer, load_corpus, load_tokenizer
from jaxformer.data.config import TOKENIZERS
from jaxformer.data.tokenizers import Tokenizer, saved_tokenizer_exists
from jaxformer.errors import UserError

# Alternating backgrounds make token boundaries visible, including in runs of spaces.
STYLES = ("black on light_sky_blue1", "black on light_goldenrod2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to split")
    parser.add_argument("--tokenizer", default="char",
                        help="char | bpe | unigram (built from --corpus), a sentencepiece .model "
                             "file, or a run directory holding a saved tokenizer (default: char)")
    parser.add_argument("--corpus", default="tinyshakespeare",
                        help="corpus that char / bpe / unigram are built from "
                             "(default: tinyshakespeare)")
    parser.add_argument("--vocab-size", type=int, default=0,
                        help="vocabulary size for bpe / unigram (default: 1024)")


def resolve_tokenizer(spec: str, corpus: str, vocab_size: int) -> Tokenizer:
    """A tokenizer from the command line's --tokenizer SPEC."""
    path = Path(spec).expanduser()
    if spec not in TOKENIZERS and path.is_dir():
        if saved_tokenizer_exists(path / "tokenizer"):  # a run directory keeps it there
            path = path / "tokenizer"
        if not saved_tokenizer_exists(path):
            raise UserError(f"{path} holds no saved tokenizer (tokenizer.json or tokenizer.model):"
                            " give a run directory written by `jaxformer train`")
        return load_tokenizer(path)
    if spec not in TOKENIZERS and not spec.endswith(".model"):
        raise UserError(f"--tokenizer {spec!r} is none of {', '.join(TOKENIZERS)}, a .model file "
                        "or a run directory")
    config = DataConfig(corpus=corpus, tokenizer=spec, vocab_size=vocab_size)
    if spec.endswith(".model"):  # no corpus needed to load a model file
        return build_tokenizer(config, corpus=None)
    return build_tokenizer(config, load_corpus(corpus))


def render(tokenizer: Tokenizer, text: str) -> tuple[Text, Text, int]:
    """(the text with each token on an alternating background, the ids in the same colours,
    the token count)."""
    ids = tokenizer.encode(text)
    pieces, numbers = Text(), Text()
    for k, (token_id, piece) in enumerate(zip(ids, tokenizer.pieces(ids))):
        style = STYLES[k % len(STYLES)]
        if piece.endswith("\n"):  # show the newline, then keep the text's own line break
            pieces.append(piece[:-1] + "↵", style=style)
            pieces.append("\n")
        else:
            pieces.append(piece, style=style)
        if k:
            numbers.append(" ")
        numbers.append(str(token_id), style=style)
    return pieces, numbers, len(ids)


def run(args: argparse.Namespace) -> int:
    tokenizer = resolve_tokenizer(args.tokenizer, args.corpus, args.vocab_size)
    pieces, numbers, count = render(tokenizer, args.text)
    console = Console(highlight=False, soft_wrap=True)
    console.print(pieces)
    console.print(numbers)
    per_token = len(args.text) / count if count else 0.0
    console.print(f"{count} tokens, {len(args.text)} characters ({per_token:.2f} per token); "
                  f"tokenizer {args.tokenizer}, vocabulary {tokenizer.vocab_size}")
    return 0
