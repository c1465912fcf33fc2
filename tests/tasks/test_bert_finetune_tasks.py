"""The fine-tuning tasks' rows and losses against naive references: rows built by hand from the
vocabulary, losses computed by PyTorch as HF's BertFor{SequenceClassification,TokenClassification,
QuestionAnswering} compute theirs (cross-entropy; -100 labels ignored; the mean of the start and
end losses)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxformer.config import load_config
from jaxformer.models.output import ModelOutput
from jaxformer.tasks import make_task
from jaxformer.train.run_dir import RunDir
from support.devices import ONE_DEVICE

WORDS = ["to", "be", "or", "not", "that", "is", "the", "question", "romeo", "juliet", "said",
         "who", "light", "window", "breaks", ":", ",", "?"]
PIECES = ["##s", "##ing", "##e", "yon", "##der", "wh", "##eth", "##er"]
SEQ_LEN = 16


def make(tmp_path, task: str, examples: list[dict]):
    """The task prepared on a .jsonl dataset, with a hand-written vocabulary."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES])
                     + "\n")
    data = tmp_path / f"{task}.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples))
    head = task
    config = load_config("bert_speakers_cpu", [ONE_DEVICE,
        f"task.name={task}", f"model.head={head}", f"task.dataset={data}",
        f"data.tokenizer={vocab}", "data.vocab_size=0", "data.val_fraction=0.25",
        "model.d_model=8", "model.num_layers=1", "model.num_heads=2", "model.mlp_dim=16",
        f"model.max_seq_len={SEQ_LEN}", f"train.seq_len={SEQ_LEN}", "train.batch_size=3",
        "train.init_from=null", f"train.run_dir={tmp_path / 'run'}"])
    t = make_task(config)
    t.validate()
    config = t.prepare(RunDir(tmp_path / "run"), say=lambda _: None)
    return t, config, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES]


def ids(vocab, pieces: str) -> list[int]:
    return [vocab.index(p) for p in pieces.split()]


def all_rows(t):
    return t.train_rows + t.val_rows


def stack(rows):
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def test_classification_rows_and_loss(tmp_path):
    examples = [{"text": "to be or not", "text_pair": "that is the question", "label": "pos"},
                {"text": "Romeo said", "label": "neg"},
                {"text": "who is Juliet?", "label": "pos"},
                {"text": "the light breaks", "label": "mid"}] * 2
    t, config, vocab = make(tmp_path, "classification", examples)
    assert t.label_names == ["mid", "neg", "pos"] and config.model.num_labels == 3
    rows = {tuple(r["tokens"][r["segment_ids"] > 0]): r for r in all_rows(t)}
    first = rows[tuple(ids(vocab, "[CLS] to be or not [SEP] that is the question [SEP]"))]
    assert first["token_types"][:12].tolist() == [0] * 6 + [1] * 5 + [0]
    assert first["labels"] == 2
    second = rows[tuple(ids(vocab, "[CLS] who is juliet ? [SEP]"))]
    assert second["token_types"].sum() == 0 and second["labels"] == 2

    batch = stack(all_rows(t)[:3])
    batch["weight"][1] = 0.0  # a filler row counts for nothing
    logits = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    total, count, metrics = t.loss(ModelOutput(logits=jnp.asarray(logits)), batch)
    keep = [0, 2]
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits[keep]),
                                                 torch.tensor(batch["labels"][keep]).long())
    assert float(count) == 2
    np.testing.assert_allclose(float(total) / float(count), expected.item(), rtol=1e-5)
    correct, n = metrics["accuracy"]
    assert float(correct) == np.sum(logits[keep].argmax(-1) == batch["labels"][keep]) and n == 2


def test_token_classification_labels_first_pieces(tmp_path):
    examples = [{"words": ["whether", "tis", "nobler", "yonder"], "tags": ["B", "O", "O", "B"]},
                {"words": ["to", "be", "or", "not", "to", "be"], "tags": ["B", "O", "O", "O",
                                                                        "O", "O"]},
                {"words": ["Romeo", "breaks", "windows", "said"], "tags": ["B", "O", "O", "B"]},
                {"words": ["the", "question"], "tags": ["O", "O"]}]
    t, _, vocab = make(tmp_path, "token_classification", examples)
    assert t.label_names == ["B", "O"]
    # Naive reference: each word cut on its own; the label sits on its first piece, after [CLS].
    for example in examples:
        tokens, labels, weights = [vocab.index("[CLS]")], [0], [0.0]
        for word, tag in zip(example["words"], example["tags"]):
            pieces = t.tokenizer.encode(word)
            tokens += pieces
            labels += [t.label_names.index(tag)] + [0] * (len(pieces) - 1)
            weights += [1.0] + [0.0] * (len(pieces) - 1)
        tokens.append(vocab.index("[SEP]"))
        labels, weights = np.asarray(labels + [0]), np.asarray(weights + [0.0])
        n = len(tokens)
        row = next(r for r in all_rows(t) if r["tokens"][:n].tolist() == tokens)
        assert row["segment_ids"][:n].all() and not row["segment_ids"][n:].any()
        np.testing.assert_array_equal(row["label_weights"][:n], weights)
        assert row["label_weights"][n:].sum() == 0
        np.testing.assert_array_equal(row["labels"][:n][weights > 0], labels[weights > 0])
    assert len(t.tokenizer.encode("whether")) == 3  # the test covers continuation pieces

    batch = stack(all_rows(t)[:3])
    batch["weight"][2] = 0.0
    logits = np.random.default_rng(1).normal(size=(3, SEQ_LEN, 2)).astype(np.float32)
    total, count, metrics = t.loss(ModelOutput(logits=jnp.asarray(logits)), batch)
    hf_labels = np.where(batch["label_weights"] > 0, batch["labels"], -100)
    hf_labels[2] = -100
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits).reshape(-1, 2),
                                                 torch.tensor(hf_labels).long().reshape(-1),
                                                 ignore_index=-100)
    assert float(count) == np.sum(hf_labels != -100)
    np.testing.assert_allclose(float(total) / float(count), expected.item(), rtol=1e-5)
    scored = hf_labels != -100
    assert float(metrics["accuracy"][0]) == np.sum(logits.argmax(-1)[scored] == hf_labels[scored])


def test_span_qa_positions_and_loss(tmp_path):
    context = "JULIET: who is that? ROMEO: to be or not"
    examples = [{"question": "who is that", "context": context, "answer": "JULIET"},
                {"question": "to be or not", "context": context, "answer": "ROMEO",
                 "answer_start": context.index("ROMEO")},
                {"question": "is that", "context": "said Romeo, yonder light breaks",
                 "answer": "yonder light"},
                {"question": "the question", "context": "Juliet said the question",
                 "answer": "Juliet"}]
    t, _, vocab = make(tmp_path, "span_qa", examples)
    for example in examples:
        question = t.tokenizer.encode(example["question"])
        row = next(r for r in all_rows(t) if r["tokens"][1:1 + len(question)].tolist() == question
                   and t.tokenizer.encode(example["context"])[0] == r["tokens"][len(question) + 2])
        span = row["tokens"][row["start_positions"]:row["end_positions"] + 1]
        # Naive reference: the answer cut on its own is the span between the two positions.
        assert span.tolist() == t.tokenizer.encode(example["answer"])
        assert (row["token_types"][row["start_positions"]:row["end_positions"] + 1] == 1).all()

    batch = stack(all_rows(t)[:3])
    batch["weight"][0] = 0.0
    rng = np.random.default_rng(2)
    start, end = (rng.normal(size=(3, SEQ_LEN)).astype(np.float32) for _ in range(2))
    total, count, metrics = t.loss(ModelOutput(logits=None, start_logits=jnp.asarray(start),
                                               end_logits=jnp.asarray(end)), batch)
    keep = [1, 2]
    ce = lambda logits, target: torch.nn.functional.cross_entropy(
        torch.tensor(logits[keep]), torch.tensor(batch[target][keep]).long())
    expected = (ce(start, "start_positions") + ce(end, "end_positions")) / 2
    assert float(count) == 2
    np.testing.assert_allclose(float(total) / float(count), expected.item(), rtol=1e-5)
    both = ((start.argmax(-1) == batch["start_positions"])
            & (end.argmax(-1) == batch["end_positions"]))[keep]
    assert float(metrics["exact_match"][0]) == both.sum()


def test_an_answer_cut_off_by_the_sequence_length_is_dropped(tmp_path):
    long_context = " ".join(["to be or not"] * 6) + " ROMEO"
    examples = [{"question": "who", "context": long_context, "answer": "ROMEO"}] + [
        {"question": "who", "context": "ROMEO said", "answer": "ROMEO"}] * 4
    t, _, _ = make(tmp_path, "span_qa", examples)
    assert len(all_rows(t)) == 4
