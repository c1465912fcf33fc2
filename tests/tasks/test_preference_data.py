"""Preference pairs (`jaxformer.data.preference`): the JSONL format and its one-line errors (also
through the CLI), the row layout (loss mask on the answer's tokens only) against a hand-written
example, and the shakespeare-no-e recipe against its rule."""

import json

import numpy as np
import pytest

from jaxformer.cli import main
from jaxformer.data import CharTokenizer, load_corpus
from jaxformer.data.preference import (ANSWER_CHARS, PROMPT_CHARS, encode_pair, encode_pairs,
                                       read_preferences, rule_holds, shakespeare_no_e_pairs)
from jaxformer.errors import UserError

GOOD = {"prompt": "ab", "chosen": "cd", "rejected": "dca"}


def write(tmp_path, lines):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_keeps_pairs_and_their_lines(tmp_path):
    path = write(tmp_path, [json.dumps(GOOD), "", json.dumps({**GOOD, "chosen": "x", "extra": 1})])
    pairs = read_preferences(path)
    assert pairs == [{**GOOD, "line": 1}, {**GOOD, "chosen": "x", "line": 3}]


@pytest.mark.parametrize("line, words", [
    ('{"prompt": "a", "chosen": "b"', "not JSON"),
    ('["a", "b", "c"]', "expected a JSON object"),
    ('{"prompt": "a", "chosen": "b"}', "'rejected' is missing"),
    ('{"prompt": "a", "chosen": 3, "rejected": "c"}', "'chosen' is a int, not a string"),
    ('{"prompt": "a", "chosen": "", "rejected": "c"}', "the chosen answer is empty"),
    ('{"prompt": "a", "chosen": "b", "rejected": ""}', "the rejected answer is empty"),
    ('{"prompt": "", "chosen": "b", "rejected": "c"}', "the prompt is empty"),
    ('{"prompt": "a", "chosen": "b", "rejected": "b"}', "chosen and rejected are the same"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, words):
    path = write(tmp_path, [json.dumps(GOOD), line])
    with pytest.raises(UserError) as e:
        read_preferences(path)
    message = str(e.value)
    assert message.startswith(f"{path}:2: ") and words in message and "\n" not in message


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_preferences(tmp_path / "none.jsonl")
    with pytest.raises(UserError, match="holds no preference pairs"):
        read_preferences(write(tmp_path, ["", " "]))


def test_row_layout_masks_prompt_and_padding():
    tokenizer = CharTokenizer("abcd")  # a=0 b=1 c=2 d=3
    row = encode_pair(tokenizer, GOOD, seq_len=7)
    # chosen: "ab" + "cd" = 0 1 2 3; the targets of positions 1, 2 are the answer's tokens c, d.
    np.testing.assert_array_equal(row["tokens"][0], [0, 1, 2, 3, 0, 0, 0])
    np.testing.assert_array_equal(row["targets"][0], [1, 2, 3, 0, 0, 0, 0])
    np.testing.assert_array_equal(row["loss_mask"][0], [0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(row["segment_ids"][0], [1, 1, 1, 1, 0, 0, 0])
    # rejected: "ab" + "dca" = 0 1 3 2 0
    np.testing.assert_array_equal(row["tokens"][1], [0, 1, 3, 2, 0, 0, 0])
    np.testing.assert_array_equal(row["targets"][1], [1, 3, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(row["loss_mask"][1], [0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(row["segment_ids"][1], [1, 1, 1, 1, 1, 0, 0])
    assert row["weight"] == 1.0


def test_a_row_longer_than_seq_len_names_its_line(tmp_path):
    path = write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "rejected": "abcdabcd"})])
    pairs = read_preferences(path)
    encode_pairs(CharTokenizer("abcd"), pairs[:1], 5, str(path))
    with pytest.raises(UserError, match=rf"^{path}:2: prompt \+ rejected answer is 10 tokens, "
                                        rf"longer than train.seq_len=5"):
        encode_pairs(CharTokenizer("abcd"), pairs, 5, str(path))


def test_the_cli_exits_non_zero_with_one_line(tmp_path, capsys):
    path = write(tmp_path, [json.dumps(GOOD), '{"prompt": "a", "chosen": "b", "rejected": "b"}'])
    code = main(["train", "reward_shakespeare_cpu", f"task.dataset={path}",
                 f"train.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (f"jaxformer train: error: {path}:2: chosen and rejected are the same "
                       f"text: a pair must differ")
    code = main(["reward", str(tmp_path / "no_run"), str(path)])  # the file is read first
    assert code == 2 and f"{path}:2:" in capsys.readouterr().err


def test_recipe_follows_its_rule():
    assert rule_holds("this is a lot") and not rule_holds("hErmit") and not rule_holds("see")
    text = load_corpus("tinyshakespeare").text
    pairs = shakespeare_no_e_pairs(text, 500, seed=3)
    assert pairs == shakespeare_no_e_pairs(text, 500, seed=3)
    assert len(pairs) == 500
    for field in ("prompt", "chosen", "rejected"):
        assert len({p[field] for p in pairs}) == 500  # each used once
    line_starts = {line[:PROMPT_CHARS] for line in text.split("\n")}
    for p in pairs:
        assert len(p["prompt"]) == PROMPT_CHARS and p["prompt"] in line_starts
        assert len(p["chosen"]) == len(p["rejected"]) == ANSWER_CHARS
        assert "e" not in p["chosen"].lower() and "e" in p["rejected"].lower()
        assert p["chosen"] in text and p["rejected"] in text and "\n" not in p["chosen"]
