"""The encoder (BERT) family's entry in the registry, with its sizes table for `jaxformer info`."""

from jaxformer.models.encoder.config import EncoderConfig
from jaxformer.models.encoder.costs import encoder_flops_parts, encoder_param_counts
from jaxformer.models.encoder.model import Encoder
from jaxformer.models.registry import Family, register_family


def encoder_sizes(c: EncoderConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    vocab = (f"table padded to {c.padded_vocab_size:,} rows"
             if c.padded_vocab_size != c.vocab_size else "")
    head = c.head + (f", {c.num_labels} labels" if c.head in ("classification",
                                                             "token_classification") else "")
    return [
        ("V", "vocab_size", c.vocab_size, vocab),
        ("D", "d_model", c.d_model, ""),
        ("T", "max_seq_len", c.max_seq_len, f"learned positions; {c.type_vocab_size} token types"),
        ("H", "num_heads", c.num_heads, f"head dim {c.head_size}, bidirectional"),
        ("I", "mlp_dim", c.mlp_dim, c.activation),
        ("L", "num_layers", c.num_layers, f"{c.norm_position}-layernorm; head: {head}"),
    ]


ENCODER = register_family(Family(
    name="encoder", config_class=EncoderConfig, model_class=Encoder, default_task="masked_lm",
    description="bidirectional encoder with BERT's heads (masked LM, NSP, classification, QA)",
    param_counts=encoder_param_counts, flops_parts=encoder_flops_parts, sizes=encoder_sizes))
