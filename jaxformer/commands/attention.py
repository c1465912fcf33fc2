"""`jaxformer attention`: a PNG grid of attention patterns (layers x heads) for a text.

    jaxformer attention runs/shakespeare_char_cpu --text "ROMEO: But soft" --out attn.png
    jaxformer attention ./gpt2 --text "The cat sat on the mat" --layers 0,5,11 --out attn.png

The model is rebuilt with the einsum attention implementation, whose softmax weights each layer
sows as an `nnx.Intermediate` ("attention_weights", [batch, heads, query, key]). Cell (l, h) shows
layer l, head h: row i (the query) is how much token i attends to each earlier token (the keys),
on the colour bar's scale. Token labels are drawn when the text is short enough to read them.
`attention_figure` gives the same picture as a matplotlib Figure (a notebook shows it inline).
"""

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.commands.generate import parse_ids
from jaxformer.errors import UserError
from jaxformer.generate.source import load_source

MAX_LABELLED_TOKENS = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR_OR_HF_DIR",
                        help="a `jaxformer train` run directory or a HuggingFace model directory")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text whose attention to plot")
    text.add_argument("--text-ids", metavar="IDS", help="the text as comma-separated token ids")
    parser.add_argument("--out", type=Path, default=Path("attention.png"), help="PNG file to write")
    parser.add_argument("--layers", default=None, help="comma-separated layer indices (default: all)")
    parser.add_argument("--heads", default=None, help="comma-separated head indices (default: all)")
    parser.add_argument("--tokenizer", metavar="PATH", default=None,
                        help="a sentencepiece .model, a tokenizer.json or a saved tokenizer "
                             "directory, overriding the one found next to the model")


def attention_weights(model, tokens: list[int]) -> np.ndarray:
    """Attention probabilities [layers, heads, time, time] (float32) of one sequence. `model` must
    use the einsum attention, laid out per layer (see `source.with_attention_impl`)."""
    _, intermediates = nnx.capture(model, nnx.Intermediate)(jnp.asarray([tokens], jnp.int32))
    per_layer = intermediates["layers"]
    weights = []
    for i in range(model.config.num_layers):
        sown = per_layer[i]["attention"]["attention_weights"]
        calls = sown.get_value() if isinstance(sown, nnx.Variable) else sown
        # `sow` keeps a tuple with one entry per call; the model was called once.
        weights.append(np.asarray(calls[0], np.float32)[0])
    return np.stack(weights)


def pick(spec: str | None, count: int, name: str) -> list[int]:
    if spec is None:
        return list(range(count))
    chosen = parse_ids(spec)
    bad = [i for i in chosen if not 0 <= i < count]
    if bad or not chosen:
        raise UserError(f"--{name} {spec!r}: indices must lie in [0, {count}) (the model has "
                        f"{count} {name})")
    return chosen


def attention_figure(weights: np.ndarray, layers: list[int], heads: list[int],
                     labels: list[str] | None, title: str):
    """A matplotlib Figure: one cell per (layer, head), queries down, keys across, a colour bar."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    cell = 2.2 if labels is None else max(2.2, 0.16 * len(labels))
    fig = Figure(figsize=(cell * len(heads) + 1.6, cell * len(layers) + 1.0), layout="constrained")
    axes = fig.subplots(len(layers), len(heads), squeeze=False)
    # A square-root colour scale keeps the small weights of long rows visible.
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r, c]
            image = ax.imshow(weights[layer, head], cmap="viridis", interpolation="nearest",
                              norm=norm)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=9)
            if labels is not None:
                ticks = np.arange(len(labels))
                if r == len(layers) - 1:
                    ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
                if c == 0:
                    ax.set_yticks(ticks, labels, fontsize=6)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.supxlabel("key (the token attended to)", fontsize=9)
    fig.supylabel("query (the token attending)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def plot(weights: np.ndarray, layers: list[int], heads: list[int], labels: list[str] | None,
         out: Path, title: str) -> None:
    fig = attention_figure(weights, layers, heads, labels, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def run(args) -> int:
    source = load_source(args.source, tokenizer=args.tokenizer, attention_impl="einsum")
    model, tokenizer = source.model, source.tokenizer
    if args.text_ids is not None:
        tokens = parse_ids(args.text_ids)
    elif tokenizer is None:
        raise UserError(f"{args.source} has no tokenizer (no tokenizer.json or tokenizer.model): "
                        f"pass --tokenizer PATH, or the text as token ids with --text-ids")
    else:
        tokens = tokenizer.encode(args.text)
    context = model.config.max_seq_len
    if not tokens:
        raise UserError("the text is empty: give at least one token")
    if len(tokens) > context:
        raise UserError(f"the text has {len(tokens)} tokens, more than the model's context of "
                        f"{context}: shorten it")
    bad = [t for t in tokens if not 0 <= t < model.config.vocab_size]
    if bad:
        raise UserError(f"token id {bad[0]} is outside the vocabulary [0, {model.config.vocab_size})")
    layers = pick(args.layers, model.config.num_layers, "layers")
    heads = pick(args.heads, model.config.num_heads, "heads")

    weights = attention_weights(model, tokens)
    labels = None
    if len(tokens) <= MAX_LABELLED_TOKENS:
        labels = (tokenizer.pieces(tokens) if tokenizer is not None else [str(t) for t in tokens])
        labels = [label.replace("\n", "\\n") for label in labels]
    plot(weights, layers, heads, labels, args.out,
         f"{Path(args.source).name}: attention over {len(tokens)} tokens")
    print(f"wrote {args.out} ({len(layers)} layers x {len(heads)} heads, {len(tokens)} tokens)")
    return 0
