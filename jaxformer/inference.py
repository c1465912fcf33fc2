"""Using a trained encoder on text: fill in [MASK]s, classify, tag tokens, answer, embed.

    from jaxformer.inference import fill_mask, classify, embed
    fill_mask(model, tokenizer, "to be or not to [MASK]")   # [[("be", 0.41), ("die", 0.07), ...]]
    embed(model, tokenizer, ["a text", "another"])          # [2, d_model], mean pooling

Texts become BERT inputs as `[CLS] text [SEP]` (or `[CLS] a [SEP] b [SEP]` for a pair), rows
padded to the longest with segment id 0. `model` is an `Encoder` with the matching head;
`tokenizer` a `WordPieceTokenizer`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.data.sentence_pairs import format_pair
from jaxformer.errors import UserError


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, inputs: dict):
    return nnx.merge(graphdef, state)(**inputs)


def compiled_forward(model):
    """inputs dict -> ModelOutput, jit-compiled over the model's split state (evaluation mode).
    One compiled program per model structure and input shapes, kept across calls."""
    graphdef, state = nnx.split(model)
    return lambda inputs: _forward(graphdef, state, inputs)


def encode_texts(tokenizer, texts: list[str], pairs: list[str] | None = None, *,
                 max_len: int) -> dict[str, np.ndarray]:
    """tokens, token_types, segment_ids [n, longest] for `texts` (and their pair texts); a text
    (or pair) longer than the model's `max_len` positions is truncated longest-first."""
    rows = [format_pair(tokenizer.encode(a), None if pairs is None else tokenizer.encode(pairs[i]),
                        seq_len=max_len, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                        pad_id=tokenizer.pad_id) for i, a in enumerate(texts)]
    longest = max(int(row["segment_ids"].sum()) for row in rows)
    return {name: np.stack([row[name][:longest] for row in rows])
            for name in ("tokens", "token_types", "segment_ids")}


def _require_head(model, heads: tuple[str, ...], what: str) -> None:
    head = getattr(model.config, "head", None)
    if getattr(model.config, "family", None) != "encoder" or head not in heads:
        raise UserError(f"{what} needs an encoder with a {' or '.join(heads)} head; this model is "
                        f"a {model.config.family} model" + (f" with head {head!r}" if head else ""))


def _run(model, batch: dict):
    """The model on `batch`, compiled: run op by op, a small encoder's forward spent seconds
    compiling each operation on its own."""
    return compiled_forward(model)({k: jnp.asarray(v) for k, v in batch.items()})


def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each [MASK] in `text`, the `top_k` most likely pieces with their probabilities."""
    _require_head(model, ("masked_lm", "pretraining"), "fill-mask")
    batch = encode_texts(tokenizer, [text], max_len=model.config.max_seq_len)
    positions = np.flatnonzero(batch["tokens"][0] == tokenizer.mask_id)
    if len(positions) == 0:
        where = ("" if "[MASK]" not in text else
                 f" within the model's {model.config.max_seq_len} positions")
        raise UserError(f"the text has no [MASK] token{where}: write [MASK] where a word should "
                        f"be predicted, e.g. \"to be or not to [MASK]\"")
    logits = _run(model, batch).logits[0, positions]
    probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
    out = []
    for row in probs:
        best = np.argsort(-row)[:top_k]
        out.append([(piece, float(row[i])) for piece, i in zip(tokenizer.pieces(best), best)])
    return out


def classify(model, tokenizer, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
    """Label probabilities [n, num_labels] of each text (or pair), float32."""
    _require_head(model, ("classification",), "classify")
    batch = encode_texts(tokenizer, texts, pairs, max_len=model.config.max_seq_len)
    return np.asarray(jax.nn.softmax(_run(model, batch).logits, axis=-1))


def tag_tokens(model, tokenizer, text: str) -> tuple[list[str], np.ndarray]:
    """(the text's pieces, label probabilities [pieces, num_labels]) without [CLS] / [SEP]."""
    _require_head(model, ("token_classification",), "token classification")
    batch = encode_texts(tokenizer, [text], max_len=model.config.max_seq_len)
    n = int(batch["segment_ids"][0].sum())
    probs = np.asarray(jax.nn.softmax(_run(model, batch).logits[0, 1:n - 1], axis=-1))
    return tokenizer.pieces(batch["tokens"][0, 1:n - 1]), probs


def answer(model, tokenizer, question: str, context: str, max_answer_tokens: int = 30
           ) -> tuple[str, float]:
    """The context span that best answers the question (the highest start + end logit over spans
    inside the context, end not before start), with its probability under the span softmax."""
    _require_head(model, ("span_qa",), "question answering")
    batch = encode_texts(tokenizer, [question], [context], max_len=model.config.max_seq_len)
    out = _run(model, batch)
    start, end = np.asarray(out.start_logits[0]), np.asarray(out.end_logits[0])
    in_context = (batch["token_types"][0] == 1) & (batch["tokens"][0] != tokenizer.sep_id)
    scores = start[:, None] + end[None, :]
    i, j = np.indices(scores.shape)
    allowed = in_context[:, None] & in_context[None, :] & (j >= i) & (j - i < max_answer_tokens)
    scores = np.where(allowed, scores, -np.inf)
    best = np.unravel_index(np.argmax(scores), scores.shape)
    prob = float(np.exp(scores[best] - np.logaddexp.reduce(scores[allowed])))
    return tokenizer.decode(batch["tokens"][0, best[0]:best[1] + 1]), prob


def embed(model, tokenizer, texts: list[str]) -> np.ndarray:
    """Sentence embeddings [n, d_model]: the mean of the last hidden states over each text's real
    tokens ([CLS] and [SEP] included, padding not), as sentence-transformers pools."""
    if getattr(model.config, "family", None) != "encoder":
        raise UserError(f"embed needs an encoder; this model is a {model.config.family} model")
    batch = encode_texts(tokenizer, texts, max_len=model.config.max_seq_len)
    hidden = _run(model, batch).last_hidden_state.astype(jnp.float32)
    return np.asarray(mean_pool(hidden, jnp.asarray(batch["segment_ids"])))


def mean_pool(hidden: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """[batch, time, d] -> [batch, d]: the mean over the positions whose segment id is not 0."""
    real = (segment_ids != 0).astype(hidden.dtype)[..., None]
    return (hidden * real).sum(1) / jnp.maximum(real.sum(1), 1.0)
