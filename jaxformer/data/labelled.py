"""Labelled datasets for fine-tuning: derived from a corpus offline, or read from a JSON-lines file.

`task.dataset` is the name of a derived dataset (`jaxformer.data.shakespeare_tasks.DERIVED`:
tinyshakespeare-speakers, tinyshakespeare-sentence-starts, tinyshakespeare-who-said) or a path to
a `.jsonl` file, one example per line:

    classification         {"text": "...", "text_pair": "..." (optional), "label": "name"}
    token_classification   {"words": ["...", ...], "tags": ["name", ...]}   one tag per word
    span_qa                {"question": "...", "context": "...", "answer": "...",
                            "answer_start": 17}   (character offset; optional when the answer
                                                   occurs once in the context)

Label names are kept as given (for a file: sorted), their index is the class id. The validation
split is the last `val_fraction` of the examples after a fixed shuffle (seed 0), the same on every
run and every machine.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from jaxformer.data.corpus import load_corpus
from jaxformer.data.shakespeare_tasks import DERIVED
from jaxformer.errors import UserError

KINDS = ("classification", "token_classification", "span_qa")
REQUIRED = {"classification": ("text", "label"), "token_classification": ("words", "tags"),
            "span_qa": ("question", "context", "answer")}


@dataclasses.dataclass
class LabelledData:
    kind: str  # one of KINDS
    examples: list[dict]
    label_names: list[str]  # empty for span_qa
    name: str = ""


def _check(example, kind: str, where: str) -> dict:
    if not isinstance(example, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(example).__name__}")
    missing = [k for k in REQUIRED[kind] if k not in example]
    if missing:
        raise UserError(f"{where}: a {kind} example needs {', '.join(REQUIRED[kind])}; "
                        f"{', '.join(missing)} missing")
    if kind == "token_classification" and len(example["words"]) != len(example["tags"]):
        raise UserError(f"{where}: {len(example['words'])} words but {len(example['tags'])} tags: "
                        f"give one tag per word")
    if kind == "span_qa":
        start = example.get("answer_start")
        if start is None:
            start = example["context"].find(example["answer"])
            if start < 0 or example["context"].find(example["answer"], start + 1) >= 0:
                raise UserError(f"{where}: the answer does not occur exactly once in the context: "
                                f"give its character offset as answer_start")
        if example["context"][start:start + len(example["answer"])] != example["answer"]:
            raise UserError(f"{where}: context[answer_start:] does not begin with the answer")
        example = {**example, "answer_start": int(start)}
    return example


def read_jsonl(path: Path, kind: str) -> LabelledData:
    if not path.is_file():
        raise UserError(f"task.dataset {path} does not exist: give a derived dataset name or a "
                        f".jsonl file")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                example = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{number}: not JSON ({e.msg})") from None
            examples.append(_check(example, kind, f"{path}:{number}"))
    if not examples:
        raise UserError(f"{path} holds no examples")
    labels: set[str] = set()
    for example in examples:
        if kind == "classification":
            labels.add(str(example["label"]))
        elif kind == "token_classification":
            labels.update(map(str, example["tags"]))
    return LabelledData(kind, examples, sorted(labels), path.stem)


def load_labelled(dataset: str, kind: str, corpus: str = "tinyshakespeare") -> LabelledData:
    """The examples of a derived dataset (computed from `corpus`) or of a .jsonl file."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    if dataset in DERIVED:
        derived_kind, make = DERIVED[dataset]
        if derived_kind != kind:
            raise UserError(f"task.dataset={dataset!r} is a {derived_kind} dataset, not a {kind} "
                            f"one: use {[n for n, (k, _) in DERIVED.items() if k == kind]}")
        source = load_corpus(corpus)
        if not source.is_single_text:
            raise UserError(f"{dataset} is derived from a play script like Tiny Shakespeare; "
                            f"data.corpus={corpus!r} has {len(source.documents)} documents")
        examples, names = make(source.text)
        return LabelledData(kind, examples, names, dataset)
    path = Path(dataset).expanduser()
    if path.suffix != ".jsonl":
        raise UserError(f"task.dataset={dataset!r} is neither a derived dataset "
                        f"({', '.join(DERIVED)}) nor a .jsonl file")
    return read_jsonl(path, kind)


def split_examples(examples: list, val_fraction: float) -> tuple[list, list]:
    """(train, val): a fixed shuffle (seed 0), then the last `val_fraction` validate."""
    order = np.random.default_rng(0).permutation(len(examples))
    cut = int(len(examples) * (1.0 - val_fraction))
    if cut == 0 or cut == len(examples):
        raise UserError(f"{len(examples)} examples cannot be split with val_fraction="
                        f"{val_fraction}: use more examples or another data.val_fraction")
    return [examples[i] for i in order[:cut]], [examples[i] for i in order[cut:]]
