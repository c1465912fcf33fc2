"""The encoder's configuration: BERT and its fine-tuning heads from one dataclass."""

import dataclasses

from jaxformer.models.base_config import Heads, ModelConfig, VocabPadding
from jaxformer.models.validation import (check_choice, check_compute, check_fraction, check_heads,
                                         check_positive)
from jaxformer.nn.feedforward import ACTIVATIONS, GATED

# What sits on top of the encoder, named after the HF class it matches:
#   none                  BertModel (last hidden states and the pooled [CLS])
#   pretraining           BertForPreTraining (masked LM + next-sentence prediction)
#   masked_lm             BertForMaskedLM
#   classification        BertForSequenceClassification (on the pooled [CLS])
#   token_classification  BertForTokenClassification
#   span_qa               BertForQuestionAnswering (start / end logits)
HEADS = ("none", "pretraining", "masked_lm", "classification", "token_classification", "span_qa")
POOLED_HEADS = ("none", "pretraining", "classification")  # the heads HF builds a pooler for
MLM_HEADS = ("pretraining", "masked_lm")
LABEL_HEADS = ("classification", "token_classification")


@dataclasses.dataclass(frozen=True)
class EncoderConfig(ModelConfig, VocabPadding, Heads):
    """Sizes use the standard names: V vocab_size, D d_model, T max_seq_len (the position table),
    H num_heads, I mlp_dim, L num_layers; `type_vocab_size` token types (BERT's sentence A/B).

    Defaults are BERT-base's. `norm_position="post"` is BERT's x = norm(x + f(x)); "pre" is the
    modern x = x + f(norm(x)) with a final norm after the stack (the embedding LayerNorm stays).
    `dropout` is BERT's hidden_dropout_prob (embeddings, each residual branch, the classifier's
    input unless `classifier_dropout` is set). `vocab_pad_multiple` pads the word table (and the
    masked-LM bias) as the decoder's does; counts and HF export use `vocab_size`."""

    family: str = "encoder"
    head: str = "pretraining"
    num_labels: int = 2  # classification / token_classification outputs
    vocab_size: int = 30522
    vocab_pad_multiple: int = 128
    type_vocab_size: int = 2
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    head_dim: int | None = None  # None: d_model // num_heads
    mlp_dim: int = 3072
    max_seq_len: int = 512
    norm_eps: float = 1e-12
    norm_position: str = "post"  # post (BERT) | pre
    activation: str = "gelu"  # the erf GELU, as BERT
    dropout: float = 0.1
    classifier_dropout: float | None = None  # None: `dropout`
    attention_impl: str = "xla"  # xla | cudnn | einsum (einsum can return attention weights)
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "auto"  # see models/layers.py: auto, none, keep_weights, dots_saveable, full

    def __post_init__(self):
        check_choice(self, "head", HEADS)
        check_choice(self, "norm_position", ("pre", "post"))
        check_choice(self, "activation", tuple(ACTIVATIONS) + tuple(GATED))
        check_compute(self)
        check_positive(self, "vocab_size", "vocab_pad_multiple", "type_vocab_size", "d_model", "num_layers",
                       "num_heads", "mlp_dim", "max_seq_len", "num_labels")
        check_heads(self)
        check_fraction(self, "dropout", "classifier_dropout")

    @property
    def kv_heads(self) -> int:
        return self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.mlp_dim

    @property
    def has_pooler(self) -> bool:
        return self.head in POOLED_HEADS

    @property
    def has_mlm(self) -> bool:
        return self.head in MLM_HEADS
