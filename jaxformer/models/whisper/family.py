"""Whisper's entry in the registry, with its sizes table for `jaxformer info`."""

from jaxformer.models.registry import Family, register_family
from jaxformer.models.whisper.config import WhisperConfig
from jaxformer.models.whisper.costs import whisper_flops_parts, whisper_param_counts
from jaxformer.models.whisper.model import Whisper


def whisper_sizes(c: WhisperConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    vocab = (f"table padded to {c.padded_vocab_size:,} rows; "
             if c.padded_vocab_size != c.vocab_size else "")
    return [
        ("M", "num_mel_bins", c.num_mel_bins,
         f"log-mel input of {c.num_frames} frames ({c.num_frames // 100} s)"),
        ("Ts", "max_source_positions", c.max_source_positions,
         "encoder states (conv stride 2), sinusoidal positions"),
        ("Tt", "max_target_positions", c.max_target_positions, "decoder tokens, learned positions"),
        ("V", "vocab_size", c.vocab_size, vocab + "output layer tied"),
        ("D", "d_model", c.d_model, "pre-norm LayerNorm blocks, no key bias"),
        ("Le", "encoder_layers", c.encoder_layers,
         f"{c.encoder_attention_heads} heads, ffn {c.encoder_ffn_dim} ({c.activation})"),
        ("Ld", "decoder_layers", c.decoder_layers,
         f"{c.decoder_attention_heads} heads, ffn {c.decoder_ffn_dim}, with cross-attention"),
    ]


WHISPER = register_family(Family(
    name="whisper", config_class=WhisperConfig, model_class=Whisper,
    default_task="speech_recognition",
    description="Whisper: a log-mel audio encoder and a text decoder with cross-attention",
    param_counts=whisper_param_counts, flops_parts=whisper_flops_parts, sizes=whisper_sizes))
