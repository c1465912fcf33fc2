"""`jaxformer tokens`: the split, ids and count it prints, and its one-line errors."""

import pytest

from jaxformer.cli import main
from jaxformer.commands.tokens import render
from jaxformer.data import CharTokenizer, DataConfig, build_tokenizer, load_corpus


def test_char_tokens_match_nanogpt(capsys):
    assert main(["tokens", "--tokenizer", "char", "hii there"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "hii there"
    assert out[1] == "46 47 47 1 58 46 43 56 43"  # nanoGPT's encode("hii there")
    assert out[2].startswith("9 tokens, 9 characters") and "vocabulary 65" in out[2]


def test_tokens_alternate_colours():
    pieces, numbers, count = render(CharTokenizer("abc"), "abca")
    assert count == 4 and pieces.plain == "abca" and numbers.plain == "0 1 2 0"
    styles = [str(span.style) for span in pieces.spans]
    assert len(styles) == 4 and styles[0] != styles[1] and styles[0] == styles[2]
    # A newline token is shown as "↵" and keeps the line break.
    pieces, _, _ = render(CharTokenizer("\na"), "a\na")
    assert pieces.plain == "a↵\na"


def test_run_directory_and_model_file(tmp_path, capsys):
    corpus = load_corpus("tinyshakespeare")
    tokenizer = build_tokenizer(DataConfig(tokenizer="bpe", vocab_size=300), corpus)
    model = tokenizer.save(tmp_path / "run" / "tokenizer")  # the run directory's layout
    text = "First Citizen:\nBefore we proceed"
    expected = " ".join(map(str, tokenizer.encode(text)))
    for spec in (str(tmp_path / "run"), str(model.parent), str(model)):
        assert main(["tokens", "--tokenizer", spec, text]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[2] == expected
        assert out[3].startswith(f"{len(tokenizer.encode(text))} tokens")


def test_trained_bpe_from_a_corpus_file(tmp_path, capsys):
    corpus = tmp_path / "small.txt"
    corpus.write_text("the cat sat on the mat\nthe cat ate the rat\n" * 50)
    assert main(["tokens", "--tokenizer", "bpe", "--vocab-size", "40", "--corpus", str(corpus),
                 "the cat"]) == 0
    out = capsys.readouterr().out.splitlines()
    count = int(out[-1].split()[0])
    assert 1 <= count < len("the cat")  # merges learned from the corpus


@pytest.mark.parametrize("argv, message", [
    (["--tokenizer", "char", "naïve €"], "outside the tokenizer's vocabulary: 'ï', '€'"),
    (["--tokenizer", "sentencepiece-ish", "x"], "none of char, bpe, unigram"),
    (["--tokenizer", "missing.model", "x"], "does not exist"),
    (["--tokenizer", "char", "--vocab-size", "50", "x"], "does not apply"),
    (["--corpus", "no/such/corpus", "x"], "neither a registered corpus"),
])
def test_errors_are_one_line(capsys, tmp_path, argv, message):
    assert main(["tokens", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_directory_without_tokenizer(capsys, tmp_path):
    assert main(["tokens", "--tokenizer", str(tmp_path), "x"]) == 2
    assert "holds no saved tokenizer" in capsys.readouterr().err
