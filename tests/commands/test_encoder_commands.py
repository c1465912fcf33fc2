"""The encoder commands (fill-mask, classify, embed) on tiny HuggingFace BERT directories, against
PyTorch running the same checkpoints: probabilities from transformers' softmax, embeddings from
its last hidden states mean-pooled over the attention mask, the QA span found by brute force."""

import json

import numpy as np
import pytest

import torch  # the hf extra: missing, this fails rather than skips
import transformers  # the hf extra: missing, this fails rather than skips

from jaxformer import cli  # noqa: E402

WORDS = ["to", "be", "or", "not", "that", "is", "the", "question", "romeo", "juliet", "said",
         "who", "light", "window", "breaks", "yonder", ",", "?", ":", "##s"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
LABELS = ["comedy", "history", "tragedy"]


def hf_dir(tmp_path, name: str, seed: int):
    torch.manual_seed(seed)
    labels = 2 if name == "BertForQuestionAnswering" else len(LABELS)
    names = {} if labels == 2 else dict(id2label=dict(enumerate(LABELS)),
                                        label2id={n: i for i, n in enumerate(LABELS)})
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=40, max_position_embeddings=32, num_labels=labels, **names)
    model = getattr(transformers, name)(config)
    with torch.no_grad():  # larger weights than the default init: outputs differ by input
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval()
    path = tmp_path / name
    model.save_pretrained(path, safe_serialization=True)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return path, model


def ids(text: str) -> list[int]:
    return [VOCAB.index(p) for p in text.split()]


def forward(model, rows: list[list[int]], types: list[list[int]] | None = None):
    n = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (n - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
    token_types = torch.tensor([t + [0] * (n - len(t)) for t in types]) if types else None
    with torch.no_grad():
        return model(input_ids=tokens, attention_mask=mask, token_type_ids=token_types), mask


def test_fill_mask_matches_transformers(tmp_path, capsys):
    path, model = hf_dir(tmp_path, "BertForMaskedLM", 0)
    assert cli.main(["fill-mask", str(path), "to be or [MASK] to [MASK]", "--top-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out, _ = forward(model, [ids("[CLS] to be or [MASK] to [MASK] [SEP]")])
    probs = torch.softmax(out.logits[0], -1).numpy()
    for k, position in enumerate((4, 6)):
        block = lines[k * 5:(k + 1) * 5]
        assert block[0] == f"[MASK] {k + 1}:"
        expected = np.argsort(-probs[position])[:4]
        assert [line.split()[1] for line in block[1:]] == [VOCAB[i] for i in expected]
        shown = [float(line.split()[0].rstrip("%")) / 100 for line in block[1:]]
        np.testing.assert_allclose(shown, probs[position, expected], atol=1e-4)


def test_fill_mask_without_a_mask_says_so(tmp_path, capsys):
    path, _ = hf_dir(tmp_path, "BertForMaskedLM", 0)
    capsys.readouterr()  # transformers' save_pretrained progress bars
    assert cli.main(["fill-mask", str(path), "to be or not to be"]) == 2
    err = capsys.readouterr().err
    assert "no [MASK] token" in err and len(err.strip().splitlines()) == 1


def test_classify_pairs_with_id2label(tmp_path, capsys):
    path, model = hf_dir(tmp_path, "BertForSequenceClassification", 1)
    texts, pairs = ["romeo said", "who is juliet ?"], ["to be", "the light breaks"]
    assert cli.main(["classify", str(path), *texts, "--pair", pairs[0], "--pair", pairs[1],
                     "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [ids("[CLS] romeo said [SEP] to be [SEP]"),
            ids("[CLS] who is juliet ? [SEP] the light breaks [SEP]")]
    types = [[0] * 4 + [1] * 3, [0] * 6 + [1] * 4]
    out, _ = forward(model, rows, types)
    probs = torch.softmax(out.logits, -1).numpy()
    for i, text in enumerate(texts):
        assert lines[2 * i] == text
        shown = [part.split() for part in lines[2 * i + 1].split(", ")]
        order = np.argsort(-probs[i])
        assert [name for name, _ in shown] == [LABELS[j] for j in order]
        np.testing.assert_allclose([float(p.rstrip("%")) / 100 for _, p in shown],
                                   probs[i, order], atol=1e-4)
    assert cli.main(["classify", str(path), "a", "b", "--pair", "c"]) == 2
    assert "--pair" in capsys.readouterr().err


def test_span_qa_answer_is_the_best_span(tmp_path, capsys):
    path, model = hf_dir(tmp_path, "BertForQuestionAnswering", 2)
    question, context = "who said that ?", "romeo said to be or not , juliet said the light"
    assert cli.main(["classify", str(path), question, "--context", context]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    q, c = ids(question), ids(context)
    row = [2, *q, 3, *c, 3]
    out, _ = forward(model, [row], [[0] * (len(q) + 2) + [1] * (len(c) + 1)])
    start, end = out.start_logits[0].numpy(), out.end_logits[0].numpy()
    first = len(q) + 2
    spans = [(start[i] + end[j], i, j) for i in range(first, first + len(c))
             for j in range(i, min(first + len(c), i + 30))]
    score, i, j = max(spans)
    total = np.logaddexp.reduce([s for s, _, _ in spans])
    from jaxformer.data import WordPieceTokenizer
    answer = WordPieceTokenizer.load(path).decode(row[i:j + 1])
    assert printed[0] == question
    assert printed[1].startswith(f"  -> {answer!r}")
    np.testing.assert_allclose(float(printed[1].split("(")[1].rstrip("%)")) / 100,
                               np.exp(score - total), atol=1e-4)
    assert cli.main(["classify", str(path), question]) == 2
    assert "--context" in capsys.readouterr().err


def test_embed_is_masked_mean_pooling(tmp_path, capsys):
    path, _ = hf_dir(tmp_path, "BertForMaskedLM", 3)
    base = transformers.BertModel.from_pretrained(path).eval()
    texts = ["to be or not to be that is the question", "romeo", "yonder window breaks"]
    npy = tmp_path / "e.npy"
    assert cli.main(["embed", str(path), *texts, "--out", str(npy)]) == 0
    out, mask = forward(base, [ids(f"[CLS] {t} [SEP]") for t in texts])
    m = mask[..., None].float()
    expected = ((out.last_hidden_state * m).sum(1) / m.sum(1)).numpy()
    vectors = np.load(npy, allow_pickle=False)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    assert "3 embeddings of 24 dimensions" in capsys.readouterr().out

    assert cli.main(["embed", str(path), *texts, "--query", "romeo"]) == 0
    ranked = capsys.readouterr().out.strip().splitlines()[1:]
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    order = np.argsort(-(unit @ unit[1]))
    assert [line.split(None, 1)[1] for line in ranked] == [texts[i] for i in order]
    assert cli.main(["embed", str(path)]) == 2
    assert "no texts to embed" in capsys.readouterr().err


def test_attention_on_a_pair_equals_transformers(tmp_path, capsys):
    from jaxformer.commands.attention import attention_weights
    from jaxformer.sources import load_source

    path, _ = hf_dir(tmp_path, "BertForMaskedLM", 4)
    png = tmp_path / "attention.png"
    assert cli.main(["attention", str(path), "--text", "to be or not", "--pair",
                     "that is the question", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "11 tokens" in capsys.readouterr().out  # [CLS] 4 [SEP] 4 [SEP]

    row = ids("[CLS] to be or not [SEP] that is the question [SEP]")
    types = [0] * 6 + [1] * 5
    ours = attention_weights(load_source(path, attention_impl="einsum").model, row, types)
    reference = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.inference_mode():
        theirs = reference(torch.tensor([row]), token_type_ids=torch.tensor([types]),
                           output_attentions=True).attentions
    expected = np.stack([a[0].numpy() for a in theirs])  # [layers, heads, query, key]
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert np.triu(ours, 1).sum() > 1.0  # bidirectional: queries attend to later keys
