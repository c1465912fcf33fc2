"""Whisper's configuration, with HF's `WhisperConfig` names for the sizes. The defaults are
whisper-tiny (39M parameters)."""

import dataclasses
from typing import ClassVar

from jaxformer.models.base_config import ModelConfig, VocabPadding
from jaxformer.models.encoder_decoder.config import EncoderDecoderConfig
from jaxformer.models.validation import (check_choice, check_compute, check_fraction,
                                         check_positive)
from jaxformer.nn.feedforward import ACTIVATIONS

STACKS = ("encoder", "decoder")


@dataclasses.dataclass(frozen=True)
class WhisperConfig(ModelConfig, VocabPadding):
    """Sizes: V vocab_size, D d_model, M num_mel_bins, Le encoder_layers / Ld decoder_layers,
    He encoder_attention_heads / Hd decoder_attention_heads (each dividing D), Ie encoder_ffn_dim /
    Id decoder_ffn_dim, Ts max_source_positions (the encoder's states: the log-mel input has
    2 Ts frames, halved by the stride-2 convolution), Tt max_target_positions (the decoder's
    tokens).

    The model: features [B, M, 2 Ts] -> conv (kernel 3, stride 1) -> GELU -> conv (kernel 3,
    stride 2) -> GELU -> + fixed sinusoidal positions -> Le pre-norm blocks (self-attention,
    feed-forward) -> LayerNorm: the memory [B, Ts, D]. Tokens -> embedding + learned positions ->
    Ld pre-norm blocks (causal self-attention, cross-attention over the memory, feed-forward) ->
    LayerNorm -> the token embedding transposed (tied; no logits bias). Every projection has a
    bias except the attention keys'. `activation` is the feed-forward's and the stem's.
    """

    is_encoder_decoder: ClassVar[bool] = True
    encoder_input: ClassVar[str] = "features"

    family: str = "whisper"
    vocab_size: int = 51865
    vocab_pad_multiple: int = 128  # embedding rows rounded up to a multiple (1: no padding)
    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    decoder_layers: int = 4
    encoder_attention_heads: int = 6
    decoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    decoder_ffn_dim: int = 1536
    max_source_positions: int = 1500
    max_target_positions: int = 448
    activation: str = "gelu"  # HF's activation_function
    norm_eps: float = 1e-5
    decoder_start_token_id: int = 50258  # <|startoftranscript|>
    eos_token_id: int = 50257  # <|endoftext|>
    dropout: float = 0.0  # on embeddings and residual branches
    attention_impl: str = "xla"  # xla | cudnn | einsum (einsum can return attention weights)
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "auto"  # see models/layers.py: auto, none, keep_weights, dots_saveable, full

    def __post_init__(self):
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_compute(self)
        check_positive(self, "vocab_size", "vocab_pad_multiple", "num_mel_bins", "d_model",
                       "encoder_layers", "decoder_layers", "encoder_attention_heads",
                       "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
                       "max_source_positions", "max_target_positions")
        for stack in STACKS:
            heads = getattr(self, f"{stack}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"model.d_model={self.d_model} is not divisible by "
                                 f"model.{stack}_attention_heads={heads}")
        if self.d_model % 2 or self.d_model < 4:
            raise ValueError(f"model.d_model={self.d_model} must be even and at least 4 (the "
                             f"encoder's sinusoidal positions are sines | cosines halves)")
        for name in ("decoder_start_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"model.{name}={getattr(self, name)} is outside the vocabulary "
                                 f"(model.vocab_size={self.vocab_size})")
        check_fraction(self, "dropout")

    def stack_config(self, stack: str) -> EncoderDecoderConfig:
        """One stack's blocks as the encoder-decoder family builds them (pre-norm LayerNorm,
        biases, this stack's heads and feed-forward width); the encoder-decoder's `Stack`,
        `make_block` and decoding cache are built from it. Its max_seq_len is the stack's
        positions."""
        return EncoderDecoderConfig(
            vocab_size=self.vocab_size, vocab_pad_multiple=self.vocab_pad_multiple,
            d_model=self.d_model, encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers, num_heads=getattr(self, f"{stack}_attention_heads"),
            mlp_dim=getattr(self, f"{stack}_ffn_dim"),
            max_seq_len=getattr(self, "max_source_positions" if stack == "encoder"
                                else "max_target_positions"),
            position="learned", norm="layernorm", norm_eps=self.norm_eps, norm_position="pre",
            embedding_norm=False, activation=self.activation, use_bias=True,
            scale_embedding=False, attention_scale=True, tie_embeddings=True,
            scale_decoder_output=False, final_logits_bias=False,
            decoder_start_token_id=self.decoder_start_token_id, init="normal",
            **self.compute_settings())

    # What the generation loops and reports read from any text-producing config.
    @property
    def max_seq_len(self) -> int:
        """The decoder's positions: the longest token sequence (prefix and new tokens)."""
        return self.max_target_positions

    @property
    def num_frames(self) -> int:
        """Log-mel frames the encoder takes: 2 x max_source_positions (3000: 30 s)."""
        return 2 * self.max_source_positions

    @property
    def num_heads(self) -> int:
        """The decoder's heads (the cross-attention maps have this many)."""
        return self.decoder_attention_heads

    @property
    def head_size(self) -> int:
        return self.d_model // self.decoder_attention_heads

    @property
    def tie_embeddings(self) -> bool:
        return True

    @property
    def num_layers(self) -> int:
        """Encoder and decoder layers together (for reports that show one depth)."""
        return self.encoder_layers + self.decoder_layers
