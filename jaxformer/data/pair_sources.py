"""Where a seq2seq run's source/target pairs come from (`task.dataset`):

- "addition": multi-digit addition generated in process (`synthetic.py`), with held-out problems;
- "span_corruption": T5's denoising objective over `data.corpus`, tokenized with `data.tokenizer`
  plus `num_sentinels` sentinel ids above its vocabulary (`span_corruption.py`);
- a `.tsv` file: one pair per line, source TAB target, tokenized with `data.tokenizer` (trained
  on both sides); the last `data.val_fraction` of the lines are held out.

Each gives a tokenizer, the training elements (a grain MapDataset), the held-out examples, and the
model vocabulary it needs.
"""

import dataclasses
from pathlib import Path

import grain
import numpy as np

from jaxformer.data.corpus import Corpus, load_corpus
from jaxformer.data.span_corruption import SpanCorruption, span_corruption_lengths
from jaxformer.data.splits import split_stream
from jaxformer.data.synthetic import AdditionExamples, addition_lengths, addition_tokenizer
from jaxformer.data.tokenizers import build_tokenizer
from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.errors import UserError

DATASETS = ("addition", "span_corruption")


@dataclasses.dataclass
class PairSource:
    tokenizer: Tokenizer
    train: grain.MapDataset  # examples, or raw pieces that `transform` turns into examples
    heldout: list[dict]  # {"inputs", "targets"} int32 arrays
    vocab_size: int  # the model's vocabulary (the tokenizer's, plus sentinels)
    source_len: int
    target_len: int
    transform: grain.transforms.RandomMap | None = None
    endless: bool = False  # `train` is already endless and random: no shuffling or epochs


def addition_source(task, *, seed: int, tokenizer: Tokenizer | None) -> PairSource:
    tokenizer = tokenizer or addition_tokenizer()
    if tokenizer.fingerprint != addition_tokenizer().fingerprint:
        raise UserError("the run directory's tokenizer is not the addition task's: use a new "
                        "train.run_dir")
    common = dict(seed=seed, max_digits=task.max_digits, holdout_fraction=task.holdout_fraction)
    heldout = AdditionExamples("heldout", **common)
    source_len, target_len = addition_lengths(task.max_digits)
    return PairSource(tokenizer, grain.MapDataset.range(2**62).map(AdditionExamples("train", **common)),
                      [heldout(i) for i in range(task.report_examples)], tokenizer.vocab_size,
                      task.source_len or source_len, task.target_len or target_len, endless=True)


def _require_eos(tokenizer: Tokenizer, what: str) -> int:
    if tokenizer.eos_id is None:
        raise UserError(f"{what} needs an end-of-sequence token, which this tokenizer lacks: use "
                        f"data.tokenizer=bpe or unigram (a character vocabulary of a single text "
                        f"has none)")
    return tokenizer.eos_id


def span_corruption_source(task, data, *, seq_len: int, tokenizer: Tokenizer | None) -> PairSource:
    corpus = load_corpus(data.corpus)
    tokenizer = tokenizer or build_tokenizer(data, corpus)
    eos = _require_eos(tokenizer, "span corruption")
    source_len = task.source_len or seq_len
    raw_len, target_len = span_corruption_lengths(source_len, task.noise_density,
                                                  task.mean_noise_span_length)
    vocab = tokenizer.vocab_size + task.num_sentinels

    def pieces(split: str) -> list[np.ndarray]:
        stream = split_stream(data, tokenizer, corpus, split)
        count = len(stream) // raw_len
        if count == 0:
            raise UserError(f"the {split} split of {corpus.name} has {len(stream)} tokens, fewer "
                            f"than one piece of {raw_len}: lower task.source_len or use a bigger "
                            f"corpus")
        return list(stream[:count * raw_len].reshape(count, raw_len))

    transform = SpanCorruption(first_sentinel_id=vocab - 1, eos_id=eos,
                               noise_density=task.noise_density,
                               mean_noise_span_length=task.mean_noise_span_length)
    rng = np.random.default_rng(0)
    heldout = [transform.random_map({"tokens": p}, rng) for p in pieces("val")[:task.report_examples]]
    train = grain.MapDataset.source(pieces("train")).map(lambda p: {"tokens": p})
    return PairSource(tokenizer, train, heldout, vocab, source_len, task.target_len or target_len,
                      transform=transform)


def tsv_source(task, data, *, seq_len: int, tokenizer: Tokenizer | None) -> PairSource:
    path = Path(task.dataset).expanduser()
    if not path.is_file():
        raise UserError(f"task.dataset={task.dataset}: no such file (give addition, "
                        f"span_corruption, or a .tsv file of source<TAB>target lines)")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise UserError(f"{path}:{number}: expected source<TAB>target, found "
                            f"{len(parts) - 1} tabs")
        pairs.append(parts)
    if len(pairs) < 2:
        raise UserError(f"{path} has {len(pairs)} pairs: at least two are needed (one held out)")
    texts = [text for pair in pairs for text in pair]
    tokenizer = tokenizer or build_tokenizer(data, Corpus(path.name, texts, path))
    eos = np.asarray([_require_eos(tokenizer, "a pairs file")], np.int32)
    examples = [{"inputs": tokenizer.encode_array(src), "targets": np.concatenate(
        [tokenizer.encode_array(tgt), eos])} for src, tgt in pairs]
    cut = min(max(int(len(examples) * (1.0 - data.val_fraction)), 1), len(examples) - 1)
    return PairSource(tokenizer, grain.MapDataset.source(examples[:cut]),
                      examples[cut:][:task.report_examples], tokenizer.vocab_size,
                      task.source_len or seq_len, task.target_len or seq_len)


def pair_source(task, data, *, seq_len: int, seed: int, tokenizer: Tokenizer | None = None
                ) -> PairSource:
    """The source `task.dataset` names; `tokenizer` (a run's saved one) is reused if given."""
    if task.dataset == "addition":
        return addition_source(task, seed=seed, tokenizer=tokenizer)
    if task.dataset == "span_corruption":
        return span_corruption_source(task, data, seq_len=seq_len, tokenizer=tokenizer)
    return tsv_source(task, data, seq_len=seq_len, tokenizer=tokenizer)
