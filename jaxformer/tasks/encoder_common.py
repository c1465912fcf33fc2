"""What the encoder tasks share: checks and the WordPiece tokenizer of a run."""

import dataclasses
from pathlib import Path

from jaxformer.data.tokenizers import (WordPieceTokenizer, build_tokenizer, load_tokenizer,
                                       saved_tokenizer_exists)
from jaxformer.errors import ConfigError, UserError


def require_encoder(config, task: str, heads: tuple[str, ...]) -> None:
    """A ConfigError unless the model is an encoder with one of `heads` and the sequence fits."""
    m, t = config.model, config.train
    if getattr(m, "family", None) != "encoder":
        raise ConfigError(f"task {task} trains an encoder: set model.family=encoder (got "
                          f"{getattr(m, 'family', None)!r})")
    if m.head not in heads:
        raise ConfigError(f"task {task} needs model.head in {list(heads)}, got {m.head!r}")
    if t.seq_len > m.max_seq_len:
        raise ConfigError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len={m.max_seq_len}: "
                          f"lower one or raise the other")


def init_from_tokenizer(source: str | None):
    """The tokenizer beside the weights a run starts from (`train.init_from`, `finetune.base`):
    a run's tokenizer/ or an HF directory's vocab.txt; or None."""
    if not source:
        return None
    path = Path(source).expanduser()
    if saved_tokenizer_exists(path / "tokenizer"):
        return load_tokenizer(path / "tokenizer")
    if (path / "vocab.txt").is_file():
        return WordPieceTokenizer.load(path)
    return None


def wordpiece_tokenizer(config, run, corpus):
    """The run's tokenizer: the one saved in the run directory (a resumed run must encode as
    before), else the one beside the weights it starts from, else built as `data.tokenizer`
    says. It must be a WordPiece tokenizer ([CLS], [SEP], [MASK] ...)."""
    tokenizer = (load_tokenizer(run.tokenizer) if run.tokenizer.exists()
                 else init_from_tokenizer(config.train.init_from or config.finetune.base)
                 or build_tokenizer(config.data, corpus))
    if not hasattr(tokenizer, "mask_id"):
        raise ConfigError(f"task {config.task.name} needs a WordPiece tokenizer: set "
                          f"data.tokenizer=wordpiece or a path to a vocab.txt (got "
                          f"{config.data.tokenizer!r})")
    return tokenizer


def with_vocab_size(config, tokenizer, say):
    """`config` with model.vocab_size set to the tokenizer's (said when it changes)."""
    if config.model.vocab_size == tokenizer.vocab_size:
        return config
    say(f"model.vocab_size set to {tokenizer.vocab_size}, the tokenizer's vocabulary size")
    return dataclasses.replace(config, model=config.model.replace(vocab_size=tokenizer.vocab_size))


def check_split(examples: list, split: str, what: str) -> None:
    if not examples:
        raise UserError(f"the {split} split has no {what}: use a bigger dataset or another "
                        f"data.val_fraction")
