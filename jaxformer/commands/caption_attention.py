"""`jaxformer attention` on an image-to-text run: which patches each caption word attends to.

    jaxformer attention runs/image_to_text_digits_cpu --digit-index 7 --out caption.png
    jaxformer attention runs/image_to_text_digits_cpu --image my_digit.png --layers 0,1

The image is a held-out image of the run's data set (`--digit-index`, an index into the split the
run held out) or a file (`--image`: a .npy array [height, width] or [height, width, channels] of
pixels in [0, 1], or a .png), resized to the model's image size and normalised as in training.
The model captions it greedily (or reads `--target`); for each caption token it then reads the
decoder's cross-attention weights over the image's patch states, averaged over the chosen heads
(`--heads`, default all) of each chosen layer (`--layers`, default the last), and draws them as a
heatmap over the patch grid on top of the image: one row per layer, one panel per token. The
memory also holds the ViT's [CLS] state; its weight (the rest of each token's attention) is
printed in the panel's title.
"""

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.commands.generate import parse_ids, pick
from jaxformer.data.images import resize
from jaxformer.errors import UserError
from jaxformer.generate import generate
from jaxformer.sources import is_run_dir
from jaxformer.tasks import make_task
from jaxformer.train.run_dir import RunDir, saved_config

END = "<end>"


def caption_task(run_dir: Path, config):
    """The run's task, prepared as it was for training: its held-out split, its normalisation
    (the training split's statistics) and its caption vocabulary."""
    task = make_task(config)
    task.prepare(RunDir(Path(run_dir)), lambda message: None)
    return task


def read_image(path: Path, channels: int) -> np.ndarray:
    """[height, width, channels] float32 pixels in [0, 1] from a .npy or .png file."""
    if not path.is_file():
        raise UserError(f"--image {path} is not a file: give a .npy or .png image")
    if path.suffix == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"--image {path} is not a numpy array file ({e})") from None
    elif path.suffix == ".png":
        from matplotlib.image import imread  # matplotlib is heavy: loaded only to read a .png
        image = imread(path)
    else:
        raise UserError(f"--image {path}: expected a .npy array or a .png file")
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise UserError(f"--image {path} has shape {image.shape}: expected [height, width] or "
                        f"[height, width, channels]")
    if image.shape[-1] == 4:
        image = image[..., :3]  # drop a PNG's alpha channel
    if image.shape[-1] != channels:
        if channels != 1:
            raise UserError(f"--image {path} has {image.shape[-1]} channels, the model takes "
                            f"{channels}")
        image = image.mean(axis=-1, keepdims=True)  # colour to grey
    return image


def patch_attention(model, image: np.ndarray, caption: list[int]) -> np.ndarray:
    """Cross-attention probabilities [decoder layers, heads, len(caption), 1 + patches] (float32)
    for one normalised image [h, w, c]: row i is where the decoder looks while producing caption
    token i (its input is the start token and caption[:i]); column 0 is [CLS], then the patches
    row by row. `model` must use the einsum attention, laid out per layer
    (`jaxformer.sources.with_attention_impl`)."""
    decoder_in = [model.config.decoder_start_token_id] + list(caption[:-1])
    _, intermediates = nnx.capture(model, nnx.Intermediate)(
        jnp.asarray(image[None], jnp.float32), jnp.asarray([decoder_in], jnp.int32))
    per_layer = intermediates["decoder"]["layers"]
    weights = []
    for i in range(model.config.decoder_layers):
        sown = per_layer[i]["cross_attention"]["attention_weights"]
        calls = sown.get_value() if isinstance(sown, nnx.Variable) else sown
        weights.append(np.asarray(calls[0], np.float32)[0])  # one call, one image
    return np.stack(weights)


def patch_maps(weights: np.ndarray, layer: int, heads: list[int], grid: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(maps [tokens, grid rows, grid cols]: the patches' weights averaged over `heads` of
    `layer`, [CLS] weight [tokens]) from `patch_attention`'s output."""
    mean = weights[layer, heads].mean(axis=0)  # [tokens, 1 + patches]
    return mean[:, 1:].reshape(len(mean), *grid), mean[:, 0]


def caption_figure(image: np.ndarray, maps: dict[int, tuple[np.ndarray, np.ndarray]],
                   words: list[str], title: str):
    """A matplotlib Figure: per layer (a row) the image, then each token's patch weights drawn
    over it on one colour scale."""
    from matplotlib.figure import Figure  # matplotlib is heavy: loaded only to draw

    rows, cols = len(maps), len(words) + 1
    fig = Figure(figsize=(1.9 * cols + 1.2, 2.1 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    height, width = image.shape[:2]
    extent = (0, width, height, 0)
    grey = image.mean(axis=-1)
    top = max(float(m.max()) for m, _ in maps.values())
    for r, (layer, (grids, cls)) in enumerate(maps.items()):
        axes[r, 0].imshow(grey, cmap="gray", extent=extent)
        axes[r, 0].set_ylabel(f"layer {layer}", fontsize=9)
        axes[r, 0].set_title("image", fontsize=9)
        for i, word in enumerate(words):
            ax = axes[r, i + 1]
            ax.imshow(grey, cmap="gray", extent=extent)
            heat = ax.imshow(grids[i], cmap="inferno", alpha=0.65, extent=extent,
                             interpolation="nearest", vmin=0.0, vmax=top)
            ax.set_title(f"{word!r}\n[CLS] {cls[i]:.2f}", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(heat, ax=axes, shrink=0.8, label="attention weight (mean over heads)")
    fig.suptitle(title, fontsize=10)
    return fig


@dataclasses.dataclass
class ImageRequest:
    """What an image-to-text run is asked to draw, checked before any weights are read."""

    task: object  # the run's prepared image_captioning task
    pixels: np.ndarray  # [height, width, channels] in [0, 1], at the model's image size
    what: str  # the image, in words, for the title
    caption: list[int] | None  # from --target / --target-ids; None: the greedy caption
    layers: list[int]
    heads: list[int]


def image_request(args) -> ImageRequest | None:
    """The checked request when `args.source` is an image-to-text run directory; None for any
    other model. A one-line UserError for flags that do not fit the model, read from the run's
    config.yaml alone."""
    path = Path(args.source)
    flag = ("--digit-index" if args.digit_index is not None else
            "--image" if args.image is not None else None)
    config = saved_config(RunDir(path)) if is_run_dir(path) else None
    if config is None or config.model.encoder_input != "images":
        if flag is None or not path.exists():
            return None  # a text model (load_source explains a missing path)
        if config is None:
            raise UserError(f"{flag} needs the run directory of an image-to-text `jaxformer "
                            f"train` run (model.family vision_encoder_decoder); {path} has no "
                            f"config.yaml")
        raise UserError(f"{flag} needs an image-to-text run (model.family "
                        f"vision_encoder_decoder); {path} holds a {config.model.family} model: "
                        f"pass --text instead")
    if flag is None:
        raise UserError(f"{path} captions images: pass --digit-index N (a held-out image of the "
                        f"run) or --image PATH (.npy or .png) instead of --text")
    m = config.model
    layers = pick(args.layers, m.decoder_layers, "layers") if args.layers else [m.decoder_layers - 1]
    heads = pick(args.heads, m.num_heads, "heads")
    task = caption_task(path, config)
    captions = task.captions
    if args.digit_index is not None:
        count = len(task.val_data)
        if not 0 <= args.digit_index < count:
            raise UserError(f"--digit-index {args.digit_index} is outside the run's held-out "
                            f"split of {count} images: pick 0 to {count - 1}")
        pixels = task.val_data.images[args.digit_index]
        label = captions.names[task.val_data.labels[args.digit_index]]
        what = f"held-out image {args.digit_index} (a {label})"
    else:
        image = read_image(args.image, m.encoder.num_channels)
        pixels = resize(image[None], m.encoder.image_size)[0]
        what = Path(args.image).name
    caption = None
    if args.target_ids is not None:
        caption = parse_ids(args.target_ids)
        bad = [t for t in caption if not 0 <= t < m.vocab_size]
        if bad:
            raise UserError(f"target token id {bad[0]} is outside the vocabulary "
                            f"[0, {m.vocab_size})")
    elif args.target is not None:
        tokens, segment_ids = captions.encode([args.target])
        caption = tokens[0, 1:int(segment_ids[0].sum())].tolist()  # words and end of text
    if caption is not None and not caption:
        raise UserError("the caption is empty: give --target with at least one word")
    if caption is not None and len(caption) > m.max_seq_len:
        raise UserError(f"the caption has {len(caption)} tokens, more than the decoder's "
                        f"{m.max_seq_len} positions: shorten --target")
    return ImageRequest(task, pixels, what, caption, layers, heads)


def run_image(args, source, request: ImageRequest) -> int:
    """Caption the requested image (or read --target) and draw each token's patch attention."""
    model, config = source.model, source.model.config
    task, captions = request.task, request.task.captions
    image = task.transform.normalise(request.pixels)
    caption = request.caption
    if caption is None:
        caption = generate(model, image[None], task.caption_len, temperature=0.0,
                           stop_tokens=[captions.eos_token_id])[0]
    weights = patch_attention(model, image, caption)
    grid = (config.encoder.image_size // config.encoder.patch_size,) * 2
    maps = {layer: patch_maps(weights, layer, request.heads, grid) for layer in request.layers}
    vocabulary = {i: w for w, i in captions.ids.items()} | {captions.eos_token_id: END}
    words = [vocabulary.get(t, f"<{t}>") for t in caption]
    text = captions.decode(caption)
    fig = caption_figure(request.pixels, maps, words,
                         f"{Path(args.source).name}: {request.what} -> {text!r}; "
                         f"cross-attention over {grid[0]}x{grid[1]} patches")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"caption: {text!r}")
    print(f"wrote {args.out} (patch attention of {len(words)} tokens, {len(request.layers)} "
          f"decoder layers x mean of {len(request.heads)} heads, {grid[0]}x{grid[1]} patches)")
    return 0
