"""BERT's data: WordPiece against a greedy longest-match reference and transformers'
BertTokenizer, masking and NSP statistics over many sequences, longest-first truncation against
transformers, the corpus cut into documents and sentences, the derived labelled datasets, and the
bad inputs that must be refused by name."""

import json
import types
import unicodedata

import numpy as np
import pytest

from jaxformer.data import load_corpus
from jaxformer.data.labelled import load_labelled, read_jsonl, split_examples
from jaxformer.data.mlm_pipeline import mlm_examples
from jaxformer.data.sentence_pairs import format_pair, truncate_longest_first
from jaxformer.data.sentences import SPEECHES_PER_DOCUMENT, speeches, split_sentences
from jaxformer.data.tokenizers.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from jaxformer.errors import UserError

TEXT = load_corpus("tinyshakespeare").text


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer.train([TEXT[:200_000]], vocab_size=1500)


def naive_wordpiece(text: str, vocab: set[str]) -> list[str]:
    """BERT's basic tokenizer (lowercase, strip accents, split on whitespace and punctuation)
    then greedy longest-match-first WordPiece, written from the paper's description."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower())
                   if unicodedata.category(c) != "Mn")
    words, current = [], ""
    for ch in text:
        if ch.isspace() or unicodedata.category(ch).startswith("P") or ch in "$+<=>^`|~":
            if current:
                words.append(current)
            current = ""
            if not ch.isspace():
                words.append(ch)
        else:
            current += ch
    if current:
        words.append(current)
    pieces = []
    for word in words:
        start, out = 0, []
        while start < len(word):
            end = len(word)
            while end > start and (word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
                end -= 1
            if end == start:
                out = ["[UNK]"]
                break
            out.append(word[start:end] if start == 0 else "##" + word[start:end])
            start = end
        pieces += out
    return pieces


def test_wordpiece_matches_greedy_longest_match(tokenizer):
    vocab = set(tokenizer.vocab)
    lines = [line for line in TEXT[300_000:340_000].split("\n") if line.strip()]
    assert len(lines) > 500
    for line in lines:
        assert tokenizer.pieces(tokenizer.encode(line)) == naive_wordpiece(line, vocab), line
    assert tokenizer.vocab[:5] == list(SPECIAL_TOKENS)
    assert 1400 <= tokenizer.vocab_size <= 1500


def test_training_is_deterministic(tokenizer):
    again = WordPieceTokenizer.train([TEXT[:200_000]], vocab_size=1500)
    assert again.vocab == tokenizer.vocab


def test_saved_vocab_reads_in_transformers(tokenizer, tmp_path):
    import transformers  # the hf extra: missing, this fails rather than skips
    tokenizer.save(tmp_path)
    assert WordPieceTokenizer.load(tmp_path).vocab == tokenizer.vocab
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))  # tokenizer_config.json
    for text, pair in [("To be, or not to be: that is the question.", "Whether 'tis nobler"),
                       ("ROMEO: But, soft! what light through yonder window breaks?", None)]:
        ids, types_ = tokenizer.encode_pair(text, pair)
        expected = reference(text, pair)
        assert ids == expected["input_ids"]
        assert types_ == expected["token_type_ids"]
        assert auto(text, pair)["input_ids"] == ids
    assert tokenizer.encode("to be or not to [MASK]")[-1] == tokenizer.mask_id


def test_vocab_without_mask_is_refused(tokenizer, tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(p for p in tokenizer.vocab if p != "[MASK]"))
    with pytest.raises(UserError, match=r"no \[MASK\] token"):
        WordPieceTokenizer.load(tmp_path / "vocab.txt")


def test_truncation_is_longest_first_as_transformers(tokenizer):
    import transformers  # the hf extra: missing, this fails rather than skips
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save(directory)
        reference = transformers.BertTokenizer(f"{directory}/vocab.txt", do_lower_case=True)
    a = "Now is the winter of our discontent made glorious summer by this sun of York"
    b = "And all the clouds that lour'd upon our house"
    for max_length in (8, 12, 17, 21, 40):
        expected = reference(a, b, truncation="longest_first", max_length=max_length)["input_ids"]
        row = format_pair(tokenizer.encode(a), tokenizer.encode(b), seq_len=max_length,
                          cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
        n = int(row["segment_ids"].sum())
        assert row["tokens"][:n].tolist() == expected, max_length
    # Equal lengths: both lose tokens in turn.
    assert truncate_longest_first([1] * 6, [2] * 6, 9) == ([1] * 5, [2] * 4)


def fake_tokenizer(vocab_size=1000):
    return types.SimpleNamespace(vocab_size=vocab_size, pad_id=0, unk_id=1, cls_id=2, sep_id=3,
                                 mask_id=4, special_ids=frozenset(range(5)))


def synthetic_documents(seed=0, count=60):
    rng = np.random.default_rng(seed)
    return [[rng.integers(5, 1000, size=rng.integers(3, 40)).astype(np.int32)
             for _ in range(rng.integers(2, 30))] for _ in range(count)]


def test_masking_statistics():
    """Over 6,000 sequences: 15% +- 0.5% of the non-special tokens chosen; of those 80/10/10
    +- 1% [MASK] / random / unchanged; special tokens never chosen; next-sentence labels 50% +- 2%;
    the recorded ids are the tokens before masking."""
    tok = fake_tokenizer()
    docs = synthetic_documents()
    masked = mlm_examples(docs, tok, seq_len=128, nsp=True, seed=3)
    chosen = candidates = as_mask = as_random = unchanged = nsp = 0
    n = 6000
    for i in range(n):
        example = masked[i]
        tokens, special = example["tokens"], example["special_mask"]
        count = int(example["masked_weights"].sum())
        positions = example["masked_positions"][:count]
        originals = example["masked_ids"][:count]
        assert len(set(positions.tolist())) == count and not special[positions].any()
        assert not np.isin(originals, list(tok.special_ids)).any()
        chosen += count
        candidates += int((~special).sum())
        got = tokens[positions]
        as_mask += int((got == tok.mask_id).sum())
        unchanged += int((got == originals).sum())
        random_ = (got != tok.mask_id) & (got != originals)
        as_random += int(random_.sum())
        assert not np.isin(got[random_], list(tok.special_ids)).any()
        # Untouched tokens are the pair's own (specials at their places).
        rest = np.setdiff1d(np.flatnonzero(~special), positions)
        assert not np.isin(tokens[rest], [tok.mask_id]).any()
        nsp += int(example["nsp_labels"])
    assert abs(chosen / candidates - 0.15) < 0.005
    assert abs(as_mask / chosen - 0.8) < 0.01
    assert abs(as_random / chosen - 0.1) < 0.01
    assert abs(unchanged / chosen - 0.1) < 0.01
    assert abs(nsp / n - 0.5) < 0.02


def test_pairs_are_laid_out_as_bert():
    tok = fake_tokenizer()
    docs = synthetic_documents(seed=1)
    example = mlm_examples(docs, tok, seq_len=64, nsp=True, seed=0, mask_prob=0.01)[5]
    tokens, token_types, segments = example["tokens"], example["token_types"], example["segment_ids"]
    n = int(segments.sum())
    seps = np.flatnonzero(tokens[:n] == tok.sep_id)
    assert tokens[0] == tok.cls_id and len(seps) == 2 and seps[1] == n - 1
    assert (token_types[:seps[0] + 1] == 0).all() and (token_types[seps[0] + 1:n] == 1).all()
    assert (tokens[n:] == tok.pad_id).all() and (token_types[n:] == 0).all()
    assert (segments[:n] == 1).all() and (segments[n:] == 0).all()


def test_true_next_sentence_follows_in_its_document():
    """Label 0: B starts with the sentence after A's last in the same document; label 1: B is
    from another document."""
    tok = fake_tokenizer()
    docs = synthetic_documents(seed=2)
    sentences = {tuple(s.tolist()): (d, i) for d, doc in enumerate(docs) for i, s in enumerate(doc)}
    pairs = mlm_examples(docs, tok, seq_len=512, nsp=True, seed=1, mask_prob=1e-9)
    for index in range(200):
        example = pairs[index]
        tokens = example["tokens"][:int(example["segment_ids"].sum())]
        seps = np.flatnonzero(tokens == tok.sep_id)
        a, b = tokens[1:seps[0]].tolist(), tokens[seps[0] + 1:seps[1]].tolist()
        # A and B start at sentence starts; longest-first truncation may cut either's end.
        starts_with = lambda seq: next(v for k, v in sentences.items()
                                       if seq[:len(k)] == list(k) or list(k[:len(seq)]) == seq)
        a_doc, a_last = starts_with(a)
        taken = len(docs[a_doc][a_last])
        while taken < len(a):  # the sentence A's last token belongs to
            a_last += 1
            taken += len(docs[a_doc][a_last])
        b_doc, b_first = starts_with(b)
        if example["nsp_labels"] == 0:
            assert (b_doc, b_first) == (a_doc, a_last + 1)
        else:
            assert b_doc != a_doc


def test_shakespeare_cut_into_documents_and_sentences():
    assert split_sentences("Stay! Speak, speak. I charge thee, speak!  Who's there? Nay") == [
        "Stay!", "Speak, speak.", "I charge thee, speak!", "Who's there?", "Nay"]
    found = speeches(TEXT)
    blocks = [b for b in TEXT.split("\n\n") if b.strip()]
    assert len(found) == sum(1 for b in blocks if b.strip().split("\n")[0].endswith(":")
                             and len(b.strip().split("\n")) > 1)
    assert found[0].speaker == "First Citizen" and found[0].text.startswith("Before we proceed")
    from jaxformer.data.sentences import document_sentences
    documents = document_sentences(load_corpus("tinyshakespeare"))
    assert len(documents) == -(-len(found) // SPEECHES_PER_DOCUMENT)
    assert documents[0][:3] == ["Before we proceed any further, hear me speak.", "Speak, speak.",
                                "You are all resolved rather to die than to famish?"]


def test_derived_datasets_are_consistent():
    speakers = load_labelled("tinyshakespeare-speakers", "classification", "tinyshakespeare")
    assert speakers.label_names[0] == "GLOUCESTER" and len(speakers.label_names) == 8
    assert {e["label"] for e in speakers.examples} == set(speakers.label_names)
    qa = load_labelled("tinyshakespeare-who-said", "span_qa", "tinyshakespeare")
    for e in qa.examples[:500]:
        assert e["context"][e["answer_start"]:].startswith(e["answer"] + ": ")
        assert e["question"] in e["context"]
    starts = load_labelled("tinyshakespeare-sentence-starts", "token_classification",
                           "tinyshakespeare")
    first = starts.examples[0]
    assert first["words"][:9] == ["Before", "we", "proceed", "any", "further,", "hear", "me",
                                  "speak", "Speak,"]
    assert first["tags"][:9] == ["B", "O", "O", "O", "O", "O", "O", "O", "B"]
    train, val = split_examples(speakers.examples, 0.1)
    assert len(val) == len(speakers.examples) - int(len(speakers.examples) * 0.9)
    assert split_examples(speakers.examples, 0.1) == (train, val)


def test_bad_labelled_files_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"words": ["a", "b"], "tags": ["X"]}) + "\n")
    with pytest.raises(UserError, match="2 words but 1 tags"):
        read_jsonl(bad, "token_classification")
    bad.write_text(json.dumps({"text": "no label"}) + "\n")
    with pytest.raises(UserError, match="label missing"):
        read_jsonl(bad, "classification")
    with pytest.raises(UserError, match="is a classification dataset"):
        load_labelled("tinyshakespeare-speakers", "span_qa", "tinyshakespeare")
