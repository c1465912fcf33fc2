"""The encoder-decoder's configuration: one dataclass covers the 2017 Transformer, T5 (v1.0 and
v1.1), BART and Marian. The defaults are t5-small (T5 v1.0)."""

import dataclasses
from typing import ClassVar

from jaxformer.models.base_config import Heads, ModelConfig, VocabPadding
from jaxformer.models.validation import (NORMS, check_choice, check_compute, check_fraction,
                                         check_heads, check_positive)
from jaxformer.nn.feedforward import ACTIVATIONS, GATED

# sinusoidal: the 2017 paper's table (sin and cos interleaved); sinusoidal_halves: sines then
# cosines (Marian, fairseq); learned: a table per stack (BART, with `position_offset` 2);
# relative: T5's bucketed bias on the self-attention scores, one table per stack.
POSITIONS = ("sinusoidal", "sinusoidal_halves", "learned", "relative")
INITS = ("normal", "t5")
STACKS = ("encoder", "decoder")


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig(ModelConfig, VocabPadding, Heads):
    """Sizes: V vocab_size (shared by source and target), D d_model, H num_heads of head_dim
    (T5's d_kv, may differ from D / H), I mlp_dim, encoder_layers / decoder_layers, T max_seq_len
    (the longest source and the longest target a position table covers).

    A stack may have its own H and I (HF BART's and Marian's encoder_attention_heads /
    decoder_attention_heads, encoder_ffn_dim / decoder_ffn_dim): `encoder_num_heads`,
    `decoder_num_heads`, `encoder_mlp_dim`, `decoder_mlp_dim`, each None for num_heads / mlp_dim.
    The decoder's cross-attention and its decoding cache have the decoder's heads, as in BART.
    With head_dim None a stack's heads are d_model / its H, so each H must divide d_model
    (num_heads too: it is the default and what single-width reports show).

    The model: token embedding (shared by encoder, decoder and, with `tie_embeddings`, the output
    layer), times sqrt(D) with `scale_embedding`, plus positions, then `embedding_norm` (BART's
    layernorm_embedding) and dropout; the encoder's blocks (self-attention, feed-forward), the
    decoder's (causal self-attention, cross-attention over the encoder's output, feed-forward),
    each sublayer with its norm before (`norm_position: pre`, T5) or after (`post`: 2017, BART,
    Marian) the residual; a final norm per stack for pre-norm models; the output layer (tied
    embedding, times D^-0.5 first with `scale_decoder_output` as in T5 v1.0, or its own matrix)
    plus `final_logits_bias` (BART, Marian).
    """

    is_encoder_decoder: ClassVar[bool] = True

    family: str = "encoder_decoder"
    vocab_size: int = 32128
    vocab_pad_multiple: int = 128  # embedding rows rounded up to a multiple (1: no padding)
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    num_heads: int = 8
    head_dim: int | None = None  # None: d_model // num_heads
    mlp_dim: int = 2048
    encoder_num_heads: int | None = None  # None: num_heads
    decoder_num_heads: int | None = None  # None: num_heads (also the cross-attention's)
    encoder_mlp_dim: int | None = None  # None: mlp_dim
    decoder_mlp_dim: int | None = None  # None: mlp_dim
    max_seq_len: int = 512
    position: str = "relative"  # sinusoidal | sinusoidal_halves | learned | relative
    position_offset: int = 0  # learned tables start at this row (BART: 2)
    relative_buckets: int = 32
    relative_max_distance: int = 128
    norm: str = "rmsnorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-6
    norm_position: str = "pre"  # pre (T5) | post (2017, BART, Marian)
    embedding_norm: bool = False  # a norm right after the embeddings (BART)
    activation: str = "relu"
    use_bias: bool = False  # biases in projections and LayerNorms
    scale_embedding: bool = False  # token embeddings times sqrt(d_model) (2017, Marian)
    attention_scale: bool = True  # scores times 1/sqrt(head_dim); T5 folds it into its init
    tie_embeddings: bool = True  # the output layer is the token embedding transposed
    scale_decoder_output: bool = True  # decoder output times d_model^-0.5 before a tied head (T5 v1.0)
    final_logits_bias: bool = False  # a [vocab] bias on the logits (BART, Marian)
    decoder_start_token_id: int = 0  # the decoder's first input (T5: pad 0; BART: eos 2)
    dropout: float = 0.0  # on embeddings and residual branches
    attention_impl: str = "xla"  # xla | cudnn | einsum (einsum can return attention weights)
    init: str = "normal"  # normal: N(0, init_std) everywhere; t5: Mesh TensorFlow's scaled normals
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "auto"  # see models/layers.py: auto, none, keep_weights, dots_saveable, full

    def __post_init__(self):
        check_choice(self, "position", POSITIONS)
        check_choice(self, "norm", NORMS)
        check_choice(self, "norm_position", ("pre", "post"))
        check_choice(self, "activation", tuple(ACTIVATIONS) + tuple(GATED))
        check_compute(self)
        check_choice(self, "init", INITS)
        check_positive(self, "vocab_size", "vocab_pad_multiple", "d_model", "encoder_layers",
                     "decoder_layers", "num_heads", "mlp_dim", "max_seq_len", "relative_buckets",
                       "relative_max_distance")
        check_heads(self)
        for stack in STACKS:
            for name in (f"{stack}_num_heads", f"{stack}_mlp_dim"):
                if getattr(self, name) is not None:
                    check_positive(self, name)
            if self.head_dim is None and self.d_model % self.stack_heads(stack):
                raise ValueError(f"model.d_model={self.d_model} is not divisible by "
                                 f"model.{stack}_num_heads={self.stack_heads(stack)}: set "
                                 f"model.head_dim explicitly")
        if self.position.startswith("sinusoidal") and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even model.d_model, got {self.d_model}")
        if self.position == "relative" and self.relative_buckets < 4:
            raise ValueError(f"model.relative_buckets={self.relative_buckets} is too few: T5 uses 32")
        if self.position_offset < 0:
            raise ValueError(f"model.position_offset must not be negative, got {self.position_offset}")
        # Checked against the vocabulary where it is used: a run sets vocab_size from its
        # tokenizer only after the config is read.
        if self.decoder_start_token_id < 0:
            raise ValueError(f"model.decoder_start_token_id must not be negative, got "
                             f"{self.decoder_start_token_id}")
        check_fraction(self, "dropout")

    def stack_heads(self, stack: str) -> int:
        """Attention heads of the "encoder" or "decoder" stack."""
        return getattr(self, f"{stack}_num_heads") or self.num_heads

    def stack_head_size(self, stack: str) -> int:
        return self.head_dim or self.d_model // self.stack_heads(stack)

    def stack_mlp_dim(self, stack: str) -> int:
        """Feed-forward width of the "encoder" or "decoder" stack."""
        return getattr(self, f"{stack}_mlp_dim") or self.mlp_dim

    @property
    def per_stack(self) -> bool:
        """Whether the stacks differ in heads or feed-forward width."""
        return (self.stack_heads("encoder") != self.stack_heads("decoder")
                or self.stack_mlp_dim("encoder") != self.stack_mlp_dim("decoder"))

    @property
    def kv_heads(self) -> int:
        return self.num_heads

    @property
    def num_layers(self) -> int:
        """Encoder and decoder layers together (for reports that show one depth)."""
        return self.encoder_layers + self.decoder_layers

    @property
    def ffn_dim(self) -> int:
        return self.mlp_dim
