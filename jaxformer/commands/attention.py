"""`jaxformer attention`: a PNG grid of attention patterns (layers x heads) for a text.

    jaxformer attention runs/shakespeare_char_cpu --text "ROMEO: But soft" --out attn.png
    jaxformer attention ./gpt2 --text "The cat sat on the mat" --layers 0,5,11 --out attn.png
    jaxformer attention ./t5-small --text "translate English to German: The house is wonderful."
    jaxformer attention runs/transformer_addition_cpu --text "352+79" --out cross.png
    jaxformer attention runs/bert_shakespeare_cpu --text "to be or not" --pair "that is the question"

The model is rebuilt with the einsum attention implementation, whose softmax weights each layer
sows as an `nnx.Intermediate` ("attention_weights", [batch, heads, query, key]). Cell (l, h) shows
layer l, head h: row i (the query) is how much token i attends to each earlier token (the keys),
on the colour bar's scale -- to every token, for an encoder, whose input is `[CLS] text [SEP]`, or
`[CLS] text [SEP] pair [SEP]` with --pair. Token labels are drawn when the text is short enough to
read them. `attention_figure` gives the same picture as a matplotlib Figure (a notebook shows it
inline).

For an encoder-decoder the grid shows cross-attention instead: in each decoder layer and head, row
i is how much output token i attends to each source token (the source is --text; the output is
--target, or the model's greedy output).

For an image-to-text model (`--digit-index N` or `--image PATH` in place of --text), each caption
word's cross-attention over the image's patches is drawn over the image (`caption_attention.py`):

    jaxformer attention runs/image_to_text_digits_cpu --digit-index 7 --out caption.png
"""

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.commands.caption_attention import image_request, run_image
from jaxformer.commands.generate import parse_ids, pick
from jaxformer.errors import UserError
from jaxformer.generate import generate
from jaxformer.generate.steps import steps_for
from jaxformer.sources import load_source

MAX_LABELLED_TOKENS = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR_OR_HF_DIR",
                        help="a `jaxformer train` run directory or a HuggingFace model directory")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text whose attention to plot")
    text.add_argument("--text-ids", metavar="IDS", help="the text as comma-separated token ids")
    text.add_argument("--digit-index", type=int, metavar="N",
                      help="image-to-text runs: caption held-out image N of the run's data set "
                           "and draw each word's attention over its patches")
    text.add_argument("--image", type=Path, metavar="PATH",
                      help="image-to-text runs: caption this image (.npy [height, width(, "
                           "channels)] in [0, 1], or .png) and draw each word's patch attention")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target", help="encoder-decoder: the output text whose cross-attention "
                                         "to plot (default: the model's greedy output)")
    target.add_argument("--target-ids", metavar="IDS", help="--target as comma-separated ids")
    parser.add_argument("--max-new-tokens", type=int, default=32,
                        help="encoder-decoder without --target: the greedy output's length limit")
    parser.add_argument("--pair", default=None,
                        help="encoders: a second text, shown as [CLS] text [SEP] pair [SEP]")
    parser.add_argument("--out", type=Path, default=Path("attention.png"), help="PNG file to write")
    parser.add_argument("--layers", default=None, help="comma-separated layer indices (default: "
                                                       "all; image-to-text: the last)")
    parser.add_argument("--heads", default=None, help="comma-separated head indices (default: all; "
                                                      "image-to-text: averaged)")
    parser.add_argument("--tokenizer", metavar="PATH", default=None,
                        help="a sentencepiece .model, a tokenizer.json or a saved tokenizer "
                             "directory, overriding the one found next to the model")


def attention_weights(model, tokens: list[int], token_types: list[int] | None = None) -> np.ndarray:
    """Attention probabilities [layers, heads, time, time] (float32) of one sequence. `model` must
    use the einsum attention, laid out per layer (see `source.with_attention_impl`).
    `token_types`: an encoder's segment A/B ids."""
    extra = {} if token_types is None else {"token_types": jnp.asarray([token_types], jnp.int32)}
    _, intermediates = nnx.capture(model, nnx.Intermediate)(jnp.asarray([tokens], jnp.int32),
                                                            **extra)
    per_layer = intermediates["layers"]
    weights = []
    for i in range(model.config.num_layers):
        sown = per_layer[i]["attention"]["attention_weights"]
        calls = sown.get_value() if isinstance(sown, nnx.Variable) else sown
        # `sow` keeps a tuple with one entry per call; the model was called once.
        weights.append(np.asarray(calls[0], np.float32)[0])
    return np.stack(weights)


def cross_attention_weights(model, source: list[int], target: list[int]) -> np.ndarray:
    """Cross-attention probabilities [decoder layers, heads, len(target), len(source)] (float32):
    row i is where the decoder looks in the source while producing target token i (its input is
    the start token and target[:i]). `model` as for `attention_weights`."""
    decoder_in = [model.config.decoder_start_token_id] + list(target[:-1])
    _, intermediates = nnx.capture(model, nnx.Intermediate)(
        jnp.asarray([source], jnp.int32), jnp.asarray([decoder_in], jnp.int32))
    per_layer = intermediates["decoder"]["layers"]
    weights = []
    for i in range(model.config.decoder_layers):
        sown = per_layer[i]["cross_attention"]["attention_weights"]
        calls = sown.get_value() if isinstance(sown, nnx.Variable) else sown
        weights.append(np.asarray(calls[0], np.float32)[0])
    return np.stack(weights)


def attention_figure(weights: np.ndarray, layers: list[int], heads: list[int],
                     labels: list[str] | None, title: str, row_labels: list[str] | None = None):
    """A matplotlib Figure: one cell per (layer, head), queries down, keys across, a colour bar.
    `labels` name the columns (keys), `row_labels` the rows (queries; default: the same)."""
    row_labels = labels if row_labels is None else row_labels
    from matplotlib.colors import PowerNorm  # matplotlib is heavy: loaded only to draw
    from matplotlib.figure import Figure

    cell = 2.2 if labels is None else max(2.2, 0.16 * max(len(labels), len(row_labels)))
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
                if r == len(layers) - 1:
                    ax.set_xticks(np.arange(len(labels)), labels, rotation=90, fontsize=6)
                if c == 0:
                    ax.set_yticks(np.arange(len(row_labels)), row_labels, fontsize=6)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.supxlabel("key (the token attended to)", fontsize=9)
    fig.supylabel("query (the token attending)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def plot(weights: np.ndarray, layers: list[int], heads: list[int], labels: list[str] | None,
         out: Path, title: str, row_labels: list[str] | None = None) -> None:
    fig = attention_figure(weights, layers, heads, labels, title, row_labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def run(args) -> int:
    request = image_request(args)  # an image-to-text run's flags, checked before loading it
    source = load_source(args.source, tokenizer=args.tokenizer, attention_impl="einsum")
    if request is not None:
        return run_image(args, source, request)
    model, tokenizer = source.model, source.tokenizer
    encoder = getattr(model.config, "family", None) == "encoder"
    token_types = None
    if args.pair is not None and (not encoder or args.text_ids is not None):
        raise UserError("--pair needs an encoder model and --text")
    if args.text_ids is not None:
        tokens = parse_ids(args.text_ids)
    elif encoder and hasattr(tokenizer, "encode_pair"):
        tokens, token_types = tokenizer.encode_pair(args.text, args.pair)
    elif tokenizer is None:
        raise UserError(f"{args.source} has no tokenizer (no tokenizer.json or tokenizer.model): "
                        f"pass --tokenizer PATH, or the text as token ids with --text-ids")
    else:
        tokens = tokenizer.encode(args.text)
    if getattr(model.config, "is_encoder_decoder", False):
        return run_cross(args, source, tokens)
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

    weights = attention_weights(model, tokens, token_types)
    labels = None
    if len(tokens) <= MAX_LABELLED_TOKENS:
        labels = (tokenizer.pieces(tokens) if tokenizer is not None else [str(t) for t in tokens])
        labels = [label.replace("\n", "\\n") for label in labels]
    kind = "bidirectional attention" if encoder else "attention"
    plot(weights, layers, heads, labels, args.out,
         f"{Path(args.source).name}: {kind} over {len(tokens)} tokens")
    print(f"wrote {args.out} ({len(layers)} layers x {len(heads)} heads, {len(tokens)} tokens)")
    return 0


def _labels(tokenizer, ids: list[int]) -> list[str]:
    labels = tokenizer.pieces(ids) if tokenizer is not None else [str(t) for t in ids]
    return [label.replace("\n", "\\n") for label in labels]


def run_cross(args, source, tokens: list[int]) -> int:
    """An encoder-decoder: cross-attention maps, output tokens (rows) by source tokens (columns),
    one cell per decoder layer and head."""
    model, tokenizer = source.model, source.tokenizer
    if args.target_ids is not None:
        target = parse_ids(args.target_ids)
    elif args.target is not None:
        if tokenizer is None:
            raise UserError("--target needs a tokenizer: pass --target-ids instead")
        target = tokenizer.encode(args.target)
    else:
        target = generate(model, [tokens], args.max_new_tokens, temperature=0.0,
                          stop_tokens=source.stop_tokens)[0]
    steps_for(model).check_request([tokens], max(len(target), 1), model.config)
    if not target:
        raise UserError("the target is empty: give --target with at least one token")
    bad = [t for t in target if not 0 <= t < model.config.vocab_size]
    if bad:
        raise UserError(f"target token id {bad[0]} is outside the vocabulary "
                        f"[0, {model.config.vocab_size})")
    layers = pick(args.layers, model.config.decoder_layers, "layers")
    heads = pick(args.heads, model.config.stack_heads("decoder"), "heads")
    weights = cross_attention_weights(model, tokens, target)
    short = max(len(tokens), len(target)) <= MAX_LABELLED_TOKENS
    plot(weights, layers, heads, _labels(tokenizer, tokens) if short else None, args.out,
         f"{Path(args.source).name}: cross-attention, {len(target)} output by {len(tokens)} "
         f"source tokens", row_labels=_labels(tokenizer, target) if short else None)
    print(f"wrote {args.out} (cross-attention: {len(layers)} decoder layers x {len(heads)} heads, "
          f"{len(target)} output x {len(tokens)} source tokens)")
    return 0
