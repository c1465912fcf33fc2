"""The image-to-text model's configuration, named after HF's `VisionEncoderDecoderConfig`: an
`encoder` section (a ViT's sizes) and a `decoder` section (a text decoder's sizes), plus the
settings both parts share. The defaults are ViT-B/16 at 224 px and a GPT-2-small-shaped decoder."""

import dataclasses
from typing import ClassVar

from jaxformer.models.base_config import Heads, ModelConfig
from jaxformer.models.encoder_decoder.config import EncoderDecoderConfig
from jaxformer.models.validation import NORMS, check_compute
from jaxformer.models.vit.config import ViTConfig
from jaxformer.nn.feedforward import ACTIVATIONS, GATED


@dataclasses.dataclass(frozen=True)
class ImageEncoderConfig:
    """The ViT: image_size (square, pixels), patch_size, num_channels, D d_model, H num_heads,
    I mlp_dim, L num_layers. No classification head and no pooler (HF's ViTModel with
    add_pooling_layer=False, as VisionEncoderDecoderModel builds it)."""

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    activation: str = "gelu"
    norm_eps: float = 1e-12


@dataclasses.dataclass(frozen=True)
class TextDecoderConfig:
    """The text decoder: token embedding + positions -> L x [causal self-attention,
    cross-attention over the image's patch states, feed-forward] -> output layer. Sizes as
    `EncoderDecoderConfig`'s (V vocab_size, D d_model, H num_heads, I mlp_dim, T max_seq_len)."""

    vocab_size: int = 50257
    vocab_pad_multiple: int = 128
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_seq_len: int = 1024
    position: str = "learned"  # learned | sinusoidal | sinusoidal_halves
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"  # pre (GPT-2) | post (BERT)
    embedding_norm: bool = False  # a norm right after the embeddings (BERT)
    activation: str = "gelu_tanh"
    use_bias: bool = True
    tie_embeddings: bool = True
    decoder_start_token_id: int = 50256  # the decoder's first input (GPT-2: <|endoftext|>)


@dataclasses.dataclass(frozen=True)
class VisionEncoderDecoderConfig(ModelConfig, Heads):
    """images [B, H, W, C] -> ViT (`encoder`) -> patch states [B, 1 + patches, De]
    (-> `enc_to_dec_proj` to Dd when De != Dd, as HF adds it) -> the memory the `decoder`'s
    cross-attention reads. Shared: dropout, attention_impl, init_std, dtypes, scan_layers, remat."""

    family: str = "vision_encoder_decoder"
    encoder: ImageEncoderConfig = dataclasses.field(default_factory=ImageEncoderConfig)
    decoder: TextDecoderConfig = dataclasses.field(default_factory=TextDecoderConfig)
    dropout: float = 0.0
    attention_impl: str = "xla"  # xla | cudnn | einsum (einsum can return attention weights)
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: str = "auto"  # see models/layers.py: auto, none, keep_weights, dots_saveable, full

    encoder_input: ClassVar[str] = "images"

    def __post_init__(self):
        check_compute(self)
        d = self.decoder
        for name, value, allowed in (
                ("position", d.position, ("learned", "sinusoidal", "sinusoidal_halves")),
                ("norm", d.norm, NORMS), ("norm_position", d.norm_position, ("pre", "post")),
                ("activation", d.activation, tuple(ACTIVATIONS) + tuple(GATED))):
            if value not in allowed:
                raise ValueError(f"model.decoder.{name}={value!r} is not one of {list(allowed)}")
        if self.encoder.activation not in ACTIVATIONS:
            raise ValueError(f"model.encoder.activation={self.encoder.activation!r} is not one of "
                             f"{list(ACTIVATIONS)}")
        for section in ("encoder", "decoder"):
            for field in dataclasses.fields(getattr(self, section)):
                value = getattr(getattr(self, section), field.name)
                if (isinstance(value, int) and not isinstance(value, bool)
                        and field.name != "decoder_start_token_id" and value <= 0):
                    raise ValueError(f"model.{section}.{field.name} must be positive, got {value}")
        if not 0 <= d.decoder_start_token_id < d.vocab_size:
            raise ValueError(f"model.decoder.decoder_start_token_id={d.decoder_start_token_id} is "
                             f"outside the vocabulary (model.decoder.vocab_size={d.vocab_size})")
        if d.d_model % d.num_heads:
            raise ValueError(f"model.decoder.d_model={d.d_model} is not divisible by "
                             f"model.decoder.num_heads={d.num_heads}")
        self.encoder_config()  # the ViT's own checks (patch size dividing the image, heads)
        self.decoder_config()

    def encoder_config(self) -> ViTConfig:
        """The image encoder as a ViT config (no head, no pooler)."""
        e = self.encoder
        return ViTConfig(
            image_size=e.image_size, patch_size=e.patch_size, num_channels=e.num_channels,
            d_model=e.d_model, num_layers=e.num_layers, num_heads=e.num_heads, mlp_dim=e.mlp_dim,
            num_labels=0, pooler=False, activation=e.activation, norm_eps=e.norm_eps,
            **self.compute_settings())

    def decoder_config(self) -> EncoderDecoderConfig:
        """The text decoder as the decoder half of an `EncoderDecoderConfig` (its encoder fields
        are unused): the encoder-decoder's decoder stack and blocks are built from it."""
        d = self.decoder
        return EncoderDecoderConfig(
            vocab_size=d.vocab_size, vocab_pad_multiple=d.vocab_pad_multiple, d_model=d.d_model,
            encoder_layers=1, decoder_layers=d.num_layers, num_heads=d.num_heads,
            mlp_dim=d.mlp_dim, max_seq_len=d.max_seq_len, position=d.position, norm=d.norm,
            norm_eps=d.norm_eps, norm_position=d.norm_position, embedding_norm=d.embedding_norm,
            activation=d.activation, use_bias=d.use_bias, tie_embeddings=d.tie_embeddings,
            scale_decoder_output=False, decoder_start_token_id=d.decoder_start_token_id,
            init="normal", **self.compute_settings())

    # What the generation loops and the reports read from any text-producing config.
    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def max_seq_len(self) -> int:
        return self.decoder.max_seq_len

    @property
    def decoder_start_token_id(self) -> int:
        return self.decoder.decoder_start_token_id

    @property
    def decoder_layers(self) -> int:
        return self.decoder.num_layers

    @property
    def num_heads(self) -> int:
        """The decoder's heads (the cross-attention maps have this many)."""
        return self.decoder.num_heads

    @property
    def d_model(self) -> int:
        """The decoder's width (the memory is projected to it)."""
        return self.decoder.d_model

    @property
    def tie_embeddings(self) -> bool:
        return self.decoder.tie_embeddings

    @property
    def num_layers(self) -> int:
        """Encoder and decoder layers together (for reports that show one depth)."""
        return self.encoder.num_layers + self.decoder.num_layers

    @property
    def num_patches(self) -> int:
        return (self.encoder.image_size // self.encoder.patch_size) ** 2
