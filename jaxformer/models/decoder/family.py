"""The decoder family's entry in the registry, with its sizes table for `jaxformer info`."""

from jaxformer.models.decoder.config import DecoderConfig
from jaxformer.models.decoder.costs import decoder_flops_parts, decoder_param_counts
from jaxformer.models.decoder.model import DecoderLM
from jaxformer.models.registry import Family, register_family


def decoder_sizes(c: DecoderConfig) -> list[tuple[str, str, int, str]]:
    """Rows (symbol, field, value, note) for `jaxformer info`'s sizes table."""
    heads = f"{c.kv_heads} key/value heads, head dim {c.head_size}"
    ffn = c.activation + (" (gated: 3 matrices)" if c.activation.endswith("glu") else "")
    position = c.position + (f", theta {c.rope_theta:g}" if c.position == "rope" else "")
    if c.position == "rope" and c.rope_scaling is not None:
        position += f", scaled x{c.rope_scaling.factor:g} (Llama 3.1)"
    vocab = (f"table padded to {c.padded_vocab_size:,} rows"
             if c.padded_vocab_size != c.vocab_size else "")
    if c.pattern is not None:
        position += f"; attention: {c.pattern.describe()}"
    rows = [
        ("V", "vocab_size", c.vocab_size, vocab),
        ("D", "d_model", c.d_model, ""),
        ("C", "max_seq_len", c.max_seq_len, f"positions: {position}"),
        ("H", "num_heads", c.num_heads, heads),
        ("I", "mlp_dim", c.expert_dim if c.moe_num_experts else c.ffn_dim, ffn),
        ("L", "num_layers", c.num_layers, f"{c.norm_position}-{c.norm}"),
    ]
    if c.moe_num_experts:
        rows.append(("E", "moe_num_experts", c.moe_num_experts,
                     f"top-{c.moe_top_k} per token ({c.moe_router}, {c.moe_dispatch} dispatch)"))
    return rows


DECODER = register_family(Family(
    name="decoder", config_class=DecoderConfig, model_class=DecoderLM, default_task="causal_lm",
    description="decoder-only language model (GPT-2, Llama)",
    param_counts=decoder_param_counts, flops_parts=decoder_flops_parts, sizes=decoder_sizes))
