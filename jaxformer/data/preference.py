"""Preference data: pairs of answers to one prompt, the first preferred, for a reward model or DPO.

A file is JSON lines, one pair a line:

    {"prompt": "To be, or not", "chosen": " to be", "rejected": " to die"}

Each answer becomes one row of the run's `seq_len` tokens: prompt and answer encoded separately
(so the boundary between them is exact) and joined, then padded. `tokens` holds the joined
sequence, `targets[j] = tokens[j + 1]`, and `loss_mask` is 1 exactly where the target is an answer
token (the prompt's tokens and the padding count for nothing); `segment_ids` is 1 on the real
tokens and 0 on padding, so the last real token is the answer's last one (where a reward model
reads its score).

`shakespeare_no_e_pairs` derives pairs offline from Tiny Shakespeare with a rule a model's output
can be checked against (`rule_holds`): the prompt is a line's first characters; the chosen answer
is a fragment of the corpus without the letter "e", the rejected one a fragment with it.
"""

import json
from pathlib import Path

import numpy as np

from jaxformer.errors import UserError

FIELDS = ("prompt", "chosen", "rejected")
RECIPE = "shakespeare-no-e"  # the derived dataset's name (`task.dataset`)
PROMPT_CHARS = 16  # a recipe prompt: a line's first 16 characters
ANSWER_CHARS = 12  # a recipe answer: 12 characters of the corpus from a word's start


def read_preferences(path: str | Path) -> list[dict]:
    """The pairs of a JSON-lines file, each checked, with its line number as "line"; a UserError
    names the file, the line and the fix for the first bad one (blank lines are skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"preference file {path} does not exist: give a .jsonl file with one "
                        f'{{"prompt", "chosen", "rejected"}} object a line')
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            pair = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not JSON ({e.msg}): write one JSON object a line") from None
        pairs.append(check_pair(pair, where) | {"line": number})
    if not pairs:
        raise UserError(f"{path} holds no preference pairs: write one JSON object a line")
    return pairs


def check_pair(pair, where: str) -> dict:
    if not isinstance(pair, dict):
        raise UserError(f"{where}: expected a JSON object with {', '.join(FIELDS)}, got "
                        f"{type(pair).__name__}")
    for field in FIELDS:
        if field not in pair:
            raise UserError(f"{where}: {field!r} is missing: a pair needs {', '.join(FIELDS)}")
        if not isinstance(pair[field], str):
            raise UserError(f"{where}: {field!r} is a {type(pair[field]).__name__}, not a string: "
                            f"give text")
    if not pair["prompt"]:
        raise UserError(f"{where}: the prompt is empty: the first answer token needs a prompt "
                        f"to be predicted from")
    for field in ("chosen", "rejected"):
        if not pair[field]:
            raise UserError(f"{where}: the {field} answer is empty: give it some text")
    if pair["chosen"] == pair["rejected"]:
        raise UserError(f"{where}: chosen and rejected are the same text: a pair must differ")
    return {field: pair[field] for field in FIELDS}


def encode_answer(prompt_ids: list[int], answer_ids: list[int], seq_len: int
                  ) -> dict[str, np.ndarray]:
    """tokens, targets, segment_ids (int32) and loss_mask (float32), each [seq_len], of one
    prompt + answer row (see the module docstring). The caller checks the length."""
    sequence = list(prompt_ids) + list(answer_ids)
    n = len(sequence)
    tokens = np.zeros(seq_len, np.int32)
    targets = np.zeros(seq_len, np.int32)
    tokens[:n] = sequence
    targets[:n - 1] = sequence[1:]
    mask = np.zeros(seq_len, np.float32)
    mask[len(prompt_ids) - 1:n - 1] = 1.0  # targets that are answer tokens
    segment_ids = np.zeros(seq_len, np.int32)
    segment_ids[:n] = 1
    return {"tokens": tokens, "targets": targets, "loss_mask": mask, "segment_ids": segment_ids}


def encode_pair(tokenizer, pair: dict, seq_len: int, where: str = "") -> dict[str, np.ndarray]:
    """One pair's arrays, each [2, seq_len]: row 0 the chosen answer, row 1 the rejected one;
    plus `weight` 1.0. A UserError (naming `where`) when an answer's row is longer than
    `seq_len` tokens."""
    prompt = tokenizer.encode(pair["prompt"])
    rows = []
    for field in ("chosen", "rejected"):
        answer = tokenizer.encode(pair[field])
        if not prompt or not answer:
            raise UserError(f"{where}: the {'prompt' if not prompt else field} encodes to no "
                            f"tokens: give text the tokenizer keeps")
        length = len(prompt) + len(answer)
        if length > seq_len:
            raise UserError(f"{where}: prompt + {field} answer is {length} tokens, longer than "
                            f"train.seq_len={seq_len}: shorten the pair or raise train.seq_len")
        rows.append(encode_answer(prompt, answer, seq_len))
    out = {name: np.stack([r[name] for r in rows]) for name in rows[0]}
    out["weight"] = np.float32(1.0)
    return out


def encode_pairs(tokenizer, pairs: list[dict], seq_len: int, source: str = "") -> list[dict]:
    """`encode_pair` of each pair; errors name `source` and the pair's "line" (else its
    1-based index)."""
    return [encode_pair(tokenizer, pair, seq_len, f"{source}:{pair.get('line', i)}")
            for i, pair in enumerate(pairs, 1)]


def write_preferences(path: str | Path, pairs: list[dict]) -> None:
    lines = [json.dumps({field: pair[field] for field in FIELDS}) for pair in pairs]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the recipe derived from Tiny Shakespeare ---

def rule_holds(text: str) -> bool:
    """The recipe's rule: the text has no letter "e" (either case)."""
    return "e" not in text.lower()


def shakespeare_no_e_pairs(text: str, num_pairs: int = 2400, *, seed: int = 0) -> list[dict]:
    """`num_pairs` pairs from a play script: prompt = the first `PROMPT_CHARS` characters of a
    line of verse (not a speaker's name), chosen = `ANSWER_CHARS` characters of the corpus from
    a word's start, within a line, for which `rule_holds`, rejected = such a fragment for which
    it does not. Every prompt and fragment is used once; the same text and seed give the same
    pairs."""
    prompts = sorted({line[:PROMPT_CHARS] for line in text.split("\n")
                      if len(line) > PROMPT_CHARS and not line.rstrip().endswith(":")})
    good, bad = set(), set()
    for line in text.split("\n"):
        for start in range(len(line) - ANSWER_CHARS + 1):
            if line[start].isalpha() and (start == 0 or line[start - 1] == " "):
                fragment = line[start:start + ANSWER_CHARS]
                (good if rule_holds(fragment) else bad).add(fragment)
    good, bad = sorted(good), sorted(bad)
    if min(len(prompts), len(good), len(bad)) < num_pairs:
        raise UserError(f"the corpus gives {len(prompts)} prompts, {len(good)} fragments without "
                        f"'e' and {len(bad)} with: fewer than the {num_pairs} pairs asked for")
    rng = np.random.default_rng(seed)
    pick = lambda items: [items[i] for i in rng.permutation(len(items))[:num_pairs]]  # noqa: E731
    return [{"prompt": p, "chosen": c, "rejected": r}
            for p, c, r in zip(pick(prompts), pick(good), pick(bad))]
