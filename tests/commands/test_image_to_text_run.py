"""The image-to-text recipe end to end, small: a short run of configs/image_to_text_digits_cpu.yaml
captions held-out digits far above chance, and `jaxformer attention --digit-index / --image` draws
each caption token's cross-attention over the patches, the weights equal to a softmax of the
model's own queries and keys computed here by hand. The full recipe is measured in the README."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.devices import ONE_DEVICE

from jaxformer.cli import main

STEPS = 300
# 8 px digits (the data set's own size) in 4 px patches: 4 patches + [CLS].
TINY = ["model.encoder.image_size=8", "model.encoder.patch_size=4", "model.encoder.d_model=32",
        "model.encoder.num_layers=2", "model.encoder.num_heads=2", "model.encoder.mlp_dim=64",
        "model.decoder.d_model=32", "model.decoder.num_layers=2", "model.decoder.num_heads=2",
        "model.decoder.mlp_dim=64", "model.dropout=0.0", "task.crop_padding=0",
        "train.progress=false", f"train.steps={STEPS}", "train.steps_per_call=25",
        "train.log_every=25", f"train.eval_every={STEPS}", f"train.checkpoint_every={STEPS}",
        "optimizer.lr=3e-3", "optimizer.warmup_steps=10", f"optimizer.decay_steps={STEPS}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from jaxformer.config import load_config
    from jaxformer.train import train

    path = tmp_path_factory.mktemp("image_to_text") / "run"
    result = train(load_config("image_to_text_digits_cpu",
                               [f"train.run_dir={path}", ONE_DEVICE, *TINY]))
    return path, result


def test_short_run_captions_far_above_chance(trained):
    _, result = trained
    accuracy = result.report["exact_caption_accuracy"]
    print(f"exact-caption accuracy after {STEPS} steps: {accuracy:.3f}")
    # A caption names the class; one that ignores the image is right for about 1 in 10.
    assert accuracy > 0.5, accuracy
    # The held-out loss (first template) is far below knowing the template but not the digit.
    assert result.val_loss < math.log(10) / 4, result.val_loss
    examples = result.report["examples"]
    assert len(examples) == 3 and all(e["exact"] == (e["label"] in e["caption"]) for e in examples)


def naive_cross_attention(model, image: np.ndarray, caption: list[int], layer: int) -> np.ndarray:
    """[heads, tokens, 1 + patches]: the decoder run block by block up to `layer`, whose
    cross-attention queries (from the pre-norm input after self-attention) and keys (from the
    encoded image) are multiplied and softmaxed here."""
    from jaxformer.nn.context import BlockContext

    c = model.text_config
    memory = model.encode(jnp.asarray(image[None]))
    tokens = jnp.asarray([[c.decoder_start_token_id] + caption[:-1]], jnp.int32)
    positions = jnp.arange(tokens.shape[1])[None]
    x = model.embed(tokens) + model.decoder.position_embedding(positions)
    ctx = BlockContext(positions=positions, memory=memory)
    for i in range(layer):
        x = model.decoder.layers[i](x, ctx)[0]
    block = model.decoder.layers[layer]
    x = x + block.attention.as_sublayer(block.attention_norm(x), ctx, None)[0]
    q = block.cross_attention.query(block.cross_attention_norm(x))[0]  # [tokens, heads, dim]
    k = block.cross_attention.key(memory)[0]  # [1 + patches, heads, dim]
    scores = jnp.einsum("thd,mhd->htm", q, k) / math.sqrt(q.shape[-1])
    return np.asarray(jax.nn.softmax(scores, axis=-1))


def test_attention_map_over_patches(trained, tmp_path, capsys, monkeypatch):
    from jaxformer.commands import caption_attention
    from jaxformer.train import load_run

    path, result = trained
    drawn = {}
    figure = caption_attention.caption_figure

    def record(image, maps, words, title):
        drawn.update(image=image, maps=maps, words=words)
        return figure(image, maps, words, title)

    monkeypatch.setattr(caption_attention, "caption_figure", record)
    out = tmp_path / "caption.png"
    assert main(["attention", str(path), "--digit-index", "1", "--out", str(out)]) == 0
    # The checkpoint, rebuilt with the einsum attention, captions as the trained model did.
    text = result.report["examples"][1]["caption"]
    assert f"caption: {text!r}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["words"] == text.split() + [caption_attention.END]

    config, model, _ = load_run(path, log=lambda *a, **k: None)
    task = caption_attention.caption_task(path, config)
    captions = task.captions
    caption = [captions.ids[w] for w in text.split()] + [captions.eos_token_id]
    image = task.transform.normalise(task.val_data.images[1])
    # Default: the last decoder layer, the mean of its heads, each token's map on the 2x2 grid.
    last = config.model.decoder.num_layers - 1
    maps, cls = drawn["maps"][last]
    assert list(drawn["maps"]) == [last] and maps.shape == (len(caption), 2, 2)
    expected = naive_cross_attention(model, image, caption, last).mean(axis=0)
    np.testing.assert_allclose(cls, expected[:, 0], atol=1e-5)
    np.testing.assert_allclose(maps.reshape(len(caption), 4), expected[:, 1:], atol=1e-5)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)) + cls, 1.0, atol=1e-5)

    # The same image as a .npy file, a chosen head of each layer, a given caption.
    # (8 px: resizing leaves it as it is.)
    np.save(tmp_path / "digit.npy", task.val_data.images[1])
    assert main(["attention", str(path), "--image", str(tmp_path / "digit.npy"), "--heads", "1",
                 "--layers", "0,1", "--target", "the digit seven",
                 "--out", str(tmp_path / "file.png")]) == 0
    assert "caption: 'the digit seven'" in capsys.readouterr().out
    given = [captions.ids[w] for w in ("the", "digit", "seven")] + [captions.eos_token_id]
    for layer in (0, 1):
        maps, cls = drawn["maps"][layer]
        expected = naive_cross_attention(model, image, given, layer)[1]
        np.testing.assert_allclose(maps.reshape(len(given), 4), expected[:, 1:], atol=1e-5)
        np.testing.assert_allclose(cls, expected[:, 0], atol=1e-5)


def test_bad_image_requests_say_what_to_do(trained, tmp_path, capsys):
    from jaxformer.config import load_config, save_config

    path, _ = trained
    cases = [
        (["--digit-index", "360"], "outside the run's held-out split of 360 images: pick 0 to 359"),
        (["--text", "a seven"], "captions images: pass --digit-index N"),
        (["--image", str(tmp_path / "none.png")], "is not a file: give a .npy or .png image"),
        (["--image", str(tmp_path)], "is not a file: give a .npy or .png image"),
        (["--digit-index", "0", "--layers", "2"], "--layers '2': indices must lie in [0, 2)"),
    ]
    (tmp_path / "digit.txt").write_text("0 1")
    cases.append((["--image", str(tmp_path / "digit.txt")], "expected a .npy array or a .png"))
    for flags, message in cases:
        assert main(["attention", str(path), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    # `jaxformer generate` continues text prompts; it points an image-to-text run elsewhere.
    assert main(["generate", str(path), "--prompt", "a"]) == 2
    assert "captions images, not text prompts: use `jaxformer attention" in capsys.readouterr().err
    # A run of another family: refused from its config alone (no checkpoint is read).
    other = tmp_path / "decoder_run"
    other.mkdir()
    save_config(load_config("tiny-gpt2"), other / "config.yaml")
    assert main(["attention", str(other), "--digit-index", "0"]) == 2
    err = capsys.readouterr().err
    assert "needs an image-to-text run (model.family vision_encoder_decoder)" in err
    assert "holds a decoder model: pass --text instead" in err
