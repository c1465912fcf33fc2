"""`jaxformer info CONFIG`: what a model is and what it costs, without building it.

Parameters are counted from abstract shapes (nothing is allocated, so Llama 3.1 8B works on a
laptop); training FLOPs per token follow PaLM appendix B: 6N + 12 L D T, with N the parameters
less position tables, L the layers, D d_model and T the sequence length. Each symbol means one
thing: N is never the layer count.
"""

import argparse

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from jaxformer.errors import ConfigError
from jaxformer.models.config import DecoderConfig
from jaxformer.models.costs import ParamCounts, flops_per_token_parts, param_counts
from jaxformer.presets import find_config, model_config_from_dict

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a preset name (e.g. gpt2-small, llama-3.1-8b) or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="model settings to change, e.g. num_layers=6 rope_scaling.factor=4 (the model. "
                             "prefix is optional)")
    parser.add_argument("--seq-len", type=positive_int, default=None,
                        help="sequence length T for the FLOPs (default: the context, max_seq_len)")
    parser.add_argument("--tokens", type=positive_float, default=1e9,
                        help="training tokens for the total-FLOPs line (default: 1e9)")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def model_config(name_or_path: str, overrides: list[str]) -> DecoderConfig:
    """The `model:` section of a preset or YAML file with `key=value` overrides ("num_layers=6",
    "model.rope_scaling.factor=4"; the "model." prefix is optional), typed as YAML would type them."""
    path = find_config(name_or_path)
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. num_layers=6)")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # a YAML syntax error: one line that says where
        raise ConfigError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    if "model" not in loaded:
        raise ConfigError(f"{path} has no 'model:' section")
    dotlist = [item if item.startswith("model.") else f"model.{item}" for item in overrides]
    merged = OmegaConf.merge(loaded, OmegaConf.from_dotlist(dotlist))
    return model_config_from_dict(OmegaConf.to_container(merged.model, resolve=True))


def human(n: float) -> str:
    """1234567 -> "1.23M"."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def parameter_table(counts: ParamCounts, config: DecoderConfig) -> Table:
    table = Table(title="Parameters", title_justify="left", show_header=False, box=None,
                  pad_edge=False)
    for _ in range(3):
        table.add_column(justify="right")
    table.columns[0].justify = "left"
    total = counts.total
    head = "tied to the token embedding" if config.tie_embeddings else "untied LM head"
    rows = [
        ("total", counts.total, human(total)),
        ("without position tables (N)", counts.non_positional, human(counts.non_positional)),
        (f"embeddings ({head})", counts.embedding, share(counts.embedding, total)),
        ("  token embedding", counts.token_embedding, share(counts.token_embedding, total)),
        ("  position table", counts.positions, share(counts.positions, total)),
        ("  LM head", counts.lm_head, share(counts.lm_head, total)),
        ("attention (all layers)", counts.attention, share(counts.attention, total)),
        ("feed-forward (all layers)", counts.feed_forward, share(counts.feed_forward, total)),
        ("norms", counts.norms, share(counts.norms, total)),
        ("per layer", counts.per_layer, human(counts.per_layer)),
    ]
    for name, value, note in rows:
        if name.startswith("  ") and not value:
            continue  # no position table / no separate head
        table.add_row(name, f"{value:,}", note)
    weights = total * BYTES[config.param_dtype]
    table.add_row(f"weights in {config.param_dtype}", f"{weights:,} B", f"{weights / 2**30:.2f} GiB")
    return table


def size_table(config: DecoderConfig) -> Table:
    table = Table(title="Sizes", title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column()
    table.add_column()
    table.add_column(justify="right")
    table.add_column()
    c = config
    heads = f"{c.kv_heads} key/value heads, head dim {c.head_size}"
    ffn = f"{c.activation}" + (" (gated: 3 matrices)" if c.activation.endswith("glu") else "")
    position = c.position + (f", theta {c.rope_theta:g}" if c.position == "rope" else "")
    if c.position == "rope" and c.rope_scaling is not None:
        position += f", scaled x{c.rope_scaling.factor:g} (Llama 3.1)"
    for symbol, name, value, note in [
        ("V", "vocab_size", c.vocab_size, ""),
        ("D", "d_model", c.d_model, ""),
        ("C", "max_seq_len", c.max_seq_len, f"context; positions: {position}"),
        ("H", "num_heads", c.num_heads, heads),
        ("I", "mlp_dim", c.ffn_dim, ffn),
        ("L", "num_layers", c.num_layers, f"{c.norm_position}-{c.norm}"),
    ]:
        table.add_row(symbol, name, f"{value:,}", note)
    return table


def flops_table(config: DecoderConfig, seq_len: int, tokens: float) -> Table:
    table = Table(title=f"Training FLOPs per token at T = {seq_len:,} (PaLM appendix B)",
                  title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column()
    table.add_column(justify="right")
    table.add_column(justify="right")
    dense, attention = flops_per_token_parts(config, seq_len)
    per_token = dense + attention
    table.add_row("6N (weight matmuls, forward + backward)", f"{dense:,}", f"{dense:.3g}")
    table.add_row("12 L D T (attention)", f"{attention:,}", f"{attention:.3g}")
    table.add_row("total per token", f"{int(per_token):,}", f"{per_token:.3g}")
    table.add_row(f"a run of {human(tokens)} tokens", "", f"{per_token * tokens:.3g} FLOPs")
    return table


def run(args: argparse.Namespace) -> int:
    path = find_config(args.config)
    config = model_config(args.config, args.overrides)
    counts = param_counts(config)
    seq_len = args.seq_len or config.max_seq_len
    console = Console(highlight=False)
    console.print(f"[bold]{args.config}[/bold]  ({path})")
    console.print(parameter_table(counts, config))
    console.print()
    console.print(size_table(config))
    console.print()
    console.print(flops_table(config, seq_len, args.tokens))
    return 0
