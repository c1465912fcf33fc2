"""The encoder-decoder family's entry in the registry, with its sizes table for `jaxformer info`."""

from jaxformer.models.encoder_decoder.config import EncoderDecoderConfig
from jaxformer.models.encoder_decoder.costs import (encoder_decoder_flops_parts,
                                                    encoder_decoder_param_counts)
from jaxformer.models.encoder_decoder.model import EncoderDecoder
from jaxformer.models.registry import Family, register_family


def encoder_decoder_sizes(c: EncoderDecoderConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    position = {"relative": f"relative buckets {c.relative_buckets} (max distance "
                            f"{c.relative_max_distance})",
                "learned": "learned" + (f" (offset {c.position_offset})" if c.position_offset else ""),
                "sinusoidal": "sinusoidal", "sinusoidal_halves": "sinusoidal (sin | cos halves)"}
    vocab = (f"table padded to {c.padded_vocab_size:,} rows"
             if c.padded_vocab_size != c.vocab_size else "")
    head = ("tied" + (", scaled by d^-0.5" if c.scale_decoder_output else "")
            if c.tie_embeddings else "untied")
    return [
        ("V", "vocab_size", c.vocab_size, vocab),
        ("D", "d_model", c.d_model, f"output layer {head}"),
        ("T", "max_seq_len", c.max_seq_len, f"positions: {position[c.position]}"),
        *_per_stack(c),
        ("Le", "encoder_layers", c.encoder_layers, f"{c.norm_position}-{c.norm}"),
        ("Ld", "decoder_layers", c.decoder_layers, "with cross-attention"),
    ]


def _per_stack(c: EncoderDecoderConfig) -> list[tuple[str, str, int, str]]:
    """The heads and feed-forward rows: one of each, or one per stack where they differ."""
    scaling = "" if c.attention_scale else ", no 1/sqrt(d) scaling"
    if not c.per_stack:
        return [("H", "num_heads", c.num_heads, f"head dim {c.head_size}{scaling}"),
                ("I", "mlp_dim", c.mlp_dim, c.activation)]
    # The field column names the key that holds the value (a stack's own, or the shared one).
    key = lambda stack, name, shared: f"{stack}_{name}" if getattr(c, f"{stack}_{name}") else shared
    rows = []
    for stack, short in (("encoder", "e"), ("decoder", "d")):
        note = f"head dim {c.stack_head_size(stack)}{scaling}"
        rows.append((f"H{short}", key(stack, "num_heads", "num_heads"), c.stack_heads(stack),
                     note + (", cross-attention too" if stack == "decoder" else "")))
    rows += [(f"I{short}", key(stack, "mlp_dim", "mlp_dim"), c.stack_mlp_dim(stack), c.activation)
             for stack, short in (("encoder", "e"), ("decoder", "d"))]
    return rows


ENCODER_DECODER = register_family(Family(
    name="encoder_decoder", config_class=EncoderDecoderConfig, model_class=EncoderDecoder,
    default_task="seq2seq",
    description="encoder-decoder (2017 Transformer, T5 v1.0/v1.1, BART, Marian)",
    param_counts=encoder_decoder_param_counts, flops_parts=encoder_decoder_flops_parts,
    sizes=encoder_decoder_sizes))
