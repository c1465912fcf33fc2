"""`jaxformer info CONFIG`: what a model is and what it costs, without building it.

Parameters are counted from abstract shapes (nothing is allocated, so Llama 3.1 8B works on a
laptop); training FLOPs per token follow PaLM appendix B: 6N + 12 L D T for a decoder, with N the
parameters less position tables, L the layers, D d_model and T the sequence length. Each symbol
means one thing: N is never the layer count. The family named by `model.family` decides the parts
shown (see `jaxformer.models.registry`).
"""

import argparse

import jax
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from jaxformer.errors import ConfigError
from jaxformer.models import family_of
from jaxformer.models.counting import ParamCounts, flops_parts, param_counts
from jaxformer.nn import attention_kernels
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


def model_config(name_or_path: str, overrides: list[str]):
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


# How `info` labels the parts a family's counts are grouped into; other names print as they are.
LABELS = {"token_embedding": "token embedding", "positions": "position table",
          "lm_head": "LM head", "attention": "attention (all layers)",
          "feed_forward": "feed-forward (all layers)", "norms": "norms",
          "router": "routers (all layers)", "experts": "experts (all layers)",
          "encoder_attention": "encoder self-attention", "encoder_feed_forward":
          "encoder feed-forward", "decoder_attention": "decoder self-attention",
          "decoder_cross_attention": "decoder cross-attention",
          "decoder_feed_forward": "decoder feed-forward", "image_encoder": "image encoder (ViT)",
          "enc_to_dec_proj": "patch states to decoder width",
          "audio_stem": "audio stem (2 convolutions)"}
EMBEDDING_PARTS = ("token_embedding", "positions", "lm_head")


def parameter_table(counts: ParamCounts, config) -> Table:
    table = Table(title="Parameters", title_justify="left", show_header=False, box=None,
                  pad_edge=False)
    for _ in range(3):
        table.add_column(justify="right")
    table.columns[0].justify = "left"
    total = counts.total
    rows = [("total", total, human(total)),
            ("without position tables (N)", counts.non_positional,
             human(counts.non_positional))]
    if any(name in counts.groups for name in EMBEDDING_PARTS):
        tied = getattr(config, "tie_embeddings", None)
        head = ("tied to the token embedding" if tied else "untied LM head") if tied is not None else ""
        rows.append((f"embeddings ({head})" if head else "embeddings", counts.embedding,
                     share(counts.embedding, total)))
    for name, value in counts.groups.items():
        indent = "  " if name in EMBEDDING_PARTS else ""
        if indent and not value:
            continue  # no position table / no separate head
        rows.append((indent + LABELS.get(name, name), value, share(value, total)))
    if counts.per_layer:
        rows.append(("per layer", counts.per_layer, human(counts.per_layer)))
    if counts.active is not None:
        top = f"top-{getattr(config, 'moe_top_k', '?')} of {getattr(config, 'moe_num_experts', '?')} experts"
        rows.append((f"active per token ({top})", counts.active, share(counts.active, total)))
    for name, value, note in rows:
        table.add_row(name, f"{value:,}", note)
    dtype = getattr(config, "param_dtype", "float32")
    weights = total * BYTES[dtype]
    table.add_row(f"weights in {dtype}", f"{weights:,} B", f"{weights / 2**30:.2f} GiB")
    return table


def size_table(config) -> Table | None:
    family = family_of(config)
    if family.sizes is None:
        return None
    table = Table(title=f"Sizes ({family.name} family)", title_justify="left", show_header=False,
                  box=None, pad_edge=False)
    table.add_column()
    table.add_column()
    table.add_column(justify="right")
    table.add_column()
    for symbol, name, value, note in family.sizes(config):
        table.add_row(symbol, name, f"{value:,}", note)
    return table


def flops_table(config, seq_len: int, tokens: float) -> Table:
    table = Table(title=f"Training FLOPs per token at T = {seq_len:,} (PaLM appendix B)",
                  title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column()
    table.add_column(justify="right")
    table.add_column(justify="right")
    parts = flops_parts(config, seq_len)
    for label, value in parts.items():
        table.add_row(label, f"{value:,}", f"{value:.3g}")
    per_token = sum(parts.values())
    table.add_row("total per token", f"{int(per_token):,}", f"{per_token:.3g}")
    table.add_row(f"a run of {human(tokens)} tokens", "", f"{per_token * tokens:.3g} FLOPs")
    return table


def attention_line(config, seq_len: int) -> str | None:
    """Which attention kernel the config's `attention_impl` runs here, at T = seq_len, for
    unpacked rows (nn/attention_kernels.py; packed rows add segment ids, which some kernels lack)."""
    requested = getattr(config, "attention_impl", None)
    if requested is None or not hasattr(config, "num_heads"):
        return None
    case = attention_kernels.Case(
        q_len=seq_len, heads=config.num_heads, kv_heads=getattr(config, "kv_heads", config.num_heads),
        head_dim=getattr(config, "head_size", config.d_model // config.num_heads),
        dtype=getattr(config, "dtype", "float32"), causal=config.family == "decoder",
        pattern=getattr(config, "pattern", None), segments=False,
        alibi=getattr(config, "position", None) == "alibi", backend=jax.default_backend())
    if requested == "xla" and attention_kernels.blocked_causal_here(case.causal, case.backend):
        return f"attention: xla, blocked causal on this CPU ({case.describe()})"
    if requested in ("xla", "einsum", "chunked"):
        return f"attention: {requested} ({case.describe()})"
    if requested == "auto":
        impl, why = attention_kernels.auto_choice(case)
        return f"attention: auto picks {impl} ({why}; {case.describe()})"
    reason = {"cudnn": attention_kernels.cudnn_unsupported,
              "splash": attention_kernels.splash_unsupported,
              "pallas_gpu": attention_kernels.pallas_gpu_unsupported}[requested](case)
    if reason is None:
        return f"attention: {requested} ({case.describe()})"
    impl, _ = attention_kernels.auto_choice(case)
    return f"attention: {requested} falls back to {impl}: {reason} ({case.describe()})"


def run(args: argparse.Namespace) -> int:
    path = find_config(args.config)
    config = model_config(args.config, args.overrides)
    counts = param_counts(config)
    seq_len = args.seq_len or getattr(config, "max_seq_len", None) or 1
    console = Console(highlight=False)
    console.print(f"[bold]{args.config}[/bold]  ({path})")
    console.print(parameter_table(counts, config))
    console.print()
    sizes = size_table(config)
    if sizes is not None:
        console.print(sizes)
        console.print()
    console.print(flops_table(config, seq_len, args.tokens))
    line = attention_line(config, seq_len)
    if line:
        console.print()
        console.print(line)
    return 0
