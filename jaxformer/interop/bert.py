"""The encoder family's HF converter: BertModel and the five BertFor* classes.

    BertModel                       head "none"                  (bare: no "bert." prefix)
    BertForPreTraining              head "pretraining"           MLM + next-sentence heads
    BertForMaskedLM                 head "masked_lm"
    BertForSequenceClassification   head "classification"        num_labels from id2label
    BertForTokenClassification      head "token_classification"
    BertForQuestionAnswering        head "span_qa"

config.json <-> `EncoderConfig`: only settings HF's BERT has; a pre-norm encoder has no HF BERT
class and is refused on export. `hidden_dropout_prob` and `classifier_dropout` carry over;
attention-probability dropout is not implemented here, so an export writes 0.0 for it.

Weights: nn.Linear [out, in] -> our [in, out], the attention projections with heads as their own
axis. The MLM decoder is tied to the word embeddings (HF files leave it out); its bias is
`cls.predictions.bias`. The tokenizer (`vocab.txt`) is read and written by
`jaxformer.data.wordpiece`.
"""

from typing import Any

import numpy as np

from jaxformer.interop.conventions import (activations, choose, export_names, layer_norm, linear,
                                           require)
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor, reshaped, vocab_table
from jaxformer.models.encoder import EncoderConfig

ARCHITECTURES = {
    "BertModel": "none", "BertForPreTraining": "pretraining", "BertForMaskedLM": "masked_lm",
    "BertForSequenceClassification": "classification",
    "BertForTokenClassification": "token_classification", "BertForQuestionAnswering": "span_qa",
}
HEAD_TO_ARCH = {head: arch for arch, head in ARCHITECTURES.items()}
ACTIVATIONS = activations("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
EXPORT_ACTIVATIONS = export_names(ACTIVATIONS)


def num_labels(hf: dict) -> int:
    """HF keeps the label count as the length of id2label (num_labels is only an init argument)."""
    return len(hf["id2label"]) if hf.get("id2label") else int(hf.get("num_labels", 2))


def config_from_hf(arch: str, hf: dict[str, Any]) -> EncoderConfig:
    require(hf, "position_embedding_type", "absolute", "absolute", "encoder")
    require(hf, "is_decoder", False, False, "encoder")
    require(hf, "add_cross_attention", False, False, "encoder")
    head = ARCHITECTURES[arch]
    if head in ("pretraining", "masked_lm"):
        require(hf, "tie_word_embeddings", True, True, "encoder")
    if head == "span_qa" and num_labels(hf) != 2:
        raise UnsupportedConfigError(f"config.json gives BertForQuestionAnswering {num_labels(hf)} "
                                     f"labels: its qa_outputs must have 2 (start, end)")
    activation = choose("hidden_act", hf.get("hidden_act", "gelu"), ACTIVATIONS)
    d_model, heads = hf.get("hidden_size", 768), hf.get("num_attention_heads", 12)
    return EncoderConfig(
        head=head,
        num_labels=num_labels(hf),
        vocab_size=hf.get("vocab_size", 30522),
        type_vocab_size=hf.get("type_vocab_size", 2),
        d_model=d_model,
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=heads,
        mlp_dim=hf.get("intermediate_size", 3072),
        max_seq_len=hf.get("max_position_embeddings", 512),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        norm_position="post",
        activation=activation,
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        classifier_dropout=hf.get("classifier_dropout"),
        init_std=float(hf.get("initializer_range", 0.02)),
    )


def export_architecture(config: EncoderConfig) -> str:
    c = config
    problems = []
    if c.norm_position != "post":
        problems.append("norm_position='pre' (HF's BERT is post-LN)")
    if c.activation not in EXPORT_ACTIVATIONS:
        problems.append(f"activation={c.activation!r}")
    if c.head_size * c.num_heads != c.d_model:
        problems.append(f"head_dim={c.head_size} with num_heads * head_dim != d_model")
    if c.scan_layers:
        problems.append("scan_layers=True (export the per-layer layout)")
    if problems:
        raise UnsupportedConfigError(f"no HuggingFace BERT class matches this encoder: "
                                     f"{', '.join(problems)}")
    return HEAD_TO_ARCH[c.head]


def config_to_hf(arch: str, config: EncoderConfig) -> dict[str, Any]:
    c = config
    hf = {
        "architectures": [arch], "model_type": "bert", "vocab_size": c.vocab_size,
        "hidden_size": c.d_model, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "intermediate_size": c.mlp_dim,
        "max_position_embeddings": c.max_seq_len, "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.norm_eps, "hidden_act": EXPORT_ACTIVATIONS[c.activation],
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": c.classifier_dropout, "initializer_range": c.init_std,
        "pad_token_id": 0, "tie_word_embeddings": True, "torch_dtype": c.param_dtype,
    }
    if c.head in ("classification", "token_classification"):
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(c.num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(c.num_labels)}
    return hf


# --- weight tables ---


def padded_vector(name: str, size: int, path: tuple, padded_size: int) -> Tensor:
    """A [vocab] vector (the MLM bias) to ours, zero-padded to the padded vocabulary."""
    return Tensor(name, (size,), (path,), lambda w: (np.pad(w, (0, padded_size - size)),),
                  lambda p: p[:size])


def tensors(arch: str, config: EncoderConfig) -> list[Tensor]:
    c = config
    D, I, H, hd = c.d_model, c.mlp_dim, c.num_heads, c.head_size
    p = "" if arch == "BertModel" else "bert."
    rows = [
        vocab_table(p + "embeddings.word_embeddings.weight", c.vocab_size, D,
                    ("embeddings", "word", "embedding"), c.padded_vocab_size),
        reshaped(p + "embeddings.position_embeddings.weight", (c.max_seq_len, D),
                 ("embeddings", "position", "embedding"), (c.max_seq_len, D)),
        reshaped(p + "embeddings.token_type_embeddings.weight", (c.type_vocab_size, D),
                 ("embeddings", "token_type", "embedding"), (c.type_vocab_size, D)),
        *layer_norm(p + "embeddings.LayerNorm", ("embeddings", "norm"), D),
    ]
    for i in range(c.num_layers):
        hf, ours = f"{p}encoder.layer.{i}.", ("layers", i)
        attn, ffn = ours + ("attention",), ours + ("feed_forward",)
        for part in ("query", "key", "value"):
            rows += linear(hf + f"attention.self.{part}", attn + (part,), (D,), (H, hd))
        rows += linear(hf + "attention.output.dense", attn + ("out",), (H, hd), (D,))
        rows += layer_norm(hf + "attention.output.LayerNorm", ours + ("attention_norm",), D)
        rows += linear(hf + "intermediate.dense", ffn + ("up",), (D,), (I,))
        rows += linear(hf + "output.dense", ffn + ("down",), (I,), (D,))
        rows += layer_norm(hf + "output.LayerNorm", ours + ("feed_forward_norm",), D)
    if c.has_pooler:
        rows += linear(p + "pooler.dense", ("pooler", "dense"), (D,), (D,))
    if c.has_mlm:
        rows += linear("cls.predictions.transform.dense", ("mlm", "transform"), (D,), (D,))
        rows += layer_norm("cls.predictions.transform.LayerNorm", ("mlm", "norm"), D)
        rows.append(padded_vector("cls.predictions.bias", c.vocab_size, ("mlm", "bias"),
                                  c.padded_vocab_size))
    if c.head == "pretraining":
        rows += linear("cls.seq_relationship", ("nsp",), (D,), (2,))
    elif c.head in ("classification", "token_classification"):
        rows += linear("classifier", ("classifier",), (D,), (c.num_labels,))
    elif c.head == "span_qa":
        rows += linear("qa_outputs", ("qa",), (D,), (2,))
    return rows


# Saved buffers and tensors a class leaves unused: position ids, the tied decoder (and its copy
# of the bias) in older files, and the pooler / NSP head of a BertForPreTraining checkpoint
# loaded as a class without them (bert-base-uncased is published as BertForMaskedLM with both).
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids",
                    "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                    "pooler.dense.weight", "pooler.dense.bias",
                    "cls.seq_relationship.weight", "cls.seq_relationship.bias")

CONVERTER = register_converter(Converter(
    family="encoder", architectures=tuple(ARCHITECTURES), model_types={"bert": "BertModel"},
    config_from_hf=config_from_hf, export_architecture=export_architecture,
    config_to_hf=config_to_hf, tensors=tensors, base_prefix={},
    ignored_suffixes=IGNORED_SUFFIXES))
