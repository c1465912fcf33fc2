"""The vision_encoder_decoder family (a ViT encoder, a text decoder with cross-attention over the
patches): cached greedy decoding and beam search through the generation loops equal naive
references computed here by teacher forcing, the scanned model equals the unrolled one, parameters and
FLOPs are counted from the model's own weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer import count_params
from jaxformer.models import build_model
from jaxformer.models.vision_encoder_decoder_config import (ImageEncoderConfig, TextDecoderConfig,
                                                            VisionEncoderDecoderConfig)

# Odd shapes: 12 px images of 4 px patches (9 patches + [CLS]), encoder width 16 != decoder
# width 24 (so the patch states are projected), a padded vocabulary. A wide init makes the random
# model's greedy captions varied rather than one repeated token.
CONFIG = VisionEncoderDecoderConfig(
    encoder=ImageEncoderConfig(image_size=12, patch_size=4, num_channels=3, d_model=16,
                               num_layers=2, num_heads=2, mlp_dim=32),
    decoder=TextDecoderConfig(vocab_size=19, vocab_pad_multiple=8, d_model=24, num_layers=2,
                              num_heads=3, mlp_dim=40, max_seq_len=9, decoder_start_token_id=1),
    init_std=0.4)
NEW = 7


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def images():
    return np.asarray(jax.random.normal(jax.random.key(1), (3, 12, 12, 3)), np.float32)


@nnx.jit
def forward(model, images, tokens):
    return model(images, tokens).logits


def teacher_forced_greedy(model, images: np.ndarray, steps: int) -> list[list[int]]:
    """The naive reference: run the whole model (no cache) on the start token and every token so
    far, and take the argmax at the last of them. The inputs are padded to `steps` tokens so one
    program serves every step; the decoder is causal, so what follows position i cannot change
    its logits."""
    tokens = np.full((len(images), steps), CONFIG.decoder_start_token_id, np.int32)
    out = np.zeros((len(images), steps), np.int32)
    for i in range(steps):
        out[:, i] = np.argmax(forward(model, jnp.asarray(images), jnp.asarray(tokens))[:, i], -1)
        if i + 1 < steps:
            tokens[:, i + 1] = out[:, i]
    return out.tolist()


def log_probs(model, images: np.ndarray, captions: list[list[int]]) -> list[float]:
    """Each caption's sum of log-probabilities given its image, by teacher forcing."""
    tokens = np.full((len(images), NEW), CONFIG.decoder_start_token_id, np.int32)
    for row, caption in zip(tokens, captions):
        row[1:len(caption)] = caption[:-1]
    table = jax.nn.log_softmax(forward(model, jnp.asarray(images), jnp.asarray(tokens)), axis=-1)
    return [float(sum(table[b, i, t] for i, t in enumerate(caption)))
            for b, caption in enumerate(captions)]


def test_cached_greedy_equals_teacher_forced_argmax(model, images):
    from jaxformer.generate import generate

    cached = generate(model, images, NEW, temperature=0.0)
    assert cached == teacher_forced_greedy(model, images, NEW)
    assert len({tuple(c) for c in cached}) > 1 and len(set(cached[0])) > 1  # not degenerate


def test_beam_search_finds_likelier_captions(model, images):
    from jaxformer.generate import beam_decode, generate
    from jaxformer.generate.beam_search import make_settings

    greedy = generate(model, images, NEW, temperature=0.0)
    out = beam_decode(model, images, make_settings(NEW, num_beams=4, length_penalty=0.0))
    beams = [tokens[:n].tolist() for tokens, n in zip(out.tokens, out.num_tokens)]
    # Each score is its caption's own log-probability (length_penalty 0: no division) ...
    np.testing.assert_allclose(out.scores, log_probs(model, images, beams), atol=1e-4)
    # ... and beam search keeps the greedy caption among its candidates, so it does no worse.
    assert np.all(out.scores >= np.asarray(log_probs(model, images, greedy)) - 1e-4)


def test_scanned_layers_equal_unrolled(images):
    from jaxformer.generate import generate
    from jaxformer.sources import with_attention_impl

    scanned = build_model(CONFIG.replace(scan_layers=True), rngs=nnx.Rngs(3))
    unrolled = with_attention_impl(scanned, "xla")  # the same weights, one entry per layer
    tokens = jnp.asarray([[1, 5, 7, 2, 9, 3, 4]] * len(images), jnp.int32)
    np.testing.assert_allclose(forward(scanned, jnp.asarray(images), tokens),
                               forward(unrolled, jnp.asarray(images), tokens), atol=1e-5)
    # The stacked cache (one array per kind, a leading layer axis) goes through the loop.
    assert generate(scanned, images, NEW, temperature=0.0) == \
        teacher_forced_greedy(unrolled, images, NEW)


def test_images_of_another_size(model):
    from jaxformer.generate import generate

    # 16 px images: 16 patches, the ViT's positions interpolated; the cache takes their length.
    big = np.asarray(jax.random.normal(jax.random.key(2), (2, 16, 16, 3)), np.float32)
    assert generate(model, big, NEW, temperature=0.0) == teacher_forced_greedy(model, big, NEW)


def test_bad_requests(model, images):
    from jaxformer.errors import UserError
    from jaxformer.generate import generate

    with pytest.raises(UserError, match=r"images must be an array \[batch, height, width, 3\]"):
        generate(model, images[..., :1], 3)
    with pytest.raises(UserError, match="not token ids"):
        generate(model, [[1, 2, 3], [4]], 3)
    with pytest.raises(UserError, match="more than the decoder's 9 positions"):
        generate(model, images, 10)
    with pytest.raises(UserError, match="hold no 4x4 patch"):
        generate(model, images[:, :3, :3], 3)


def test_param_count_is_the_models_own(model):
    """Our count equals the model's own leaves, less the padded vocabulary rows (HF's count is
    checked in test_image_to_text_hf.py); equal widths leave the projection out."""
    d, e = CONFIG.decoder, CONFIG.encoder
    def leaves(m) -> int:
        return sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))

    padding = (CONFIG.decoder_config().padded_vocab_size - d.vocab_size) * d.d_model
    assert count_params(CONFIG) == leaves(model) - padding
    same_width = CONFIG.replace(decoder=dataclasses.replace(d, d_model=e.d_model, num_heads=2))
    same = build_model(same_width, rngs=nnx.Rngs(0))
    assert "enc_to_dec_proj" not in nnx.state(same)
    assert count_params(same_width) == leaves(same) - (
        same_width.decoder_config().padded_vocab_size - d.vocab_size) * e.d_model


def test_flops_per_token_count_each_weight_over_the_positions_that_pass_it(model):
    """The weights part against a walk over the model's own parameters: the ViT, the projection
    and the decoder's cross-attention keys and values run once per image position ([CLS] and 9
    patches), everything else once per caption position; the attention part by hand."""
    from jaxformer.models.costs import flops_parts
    from jaxformer.nn.params import path_string

    image, text = 10, 9
    per_image = per_text = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
        name = path_string(path)
        if "position_embedding" in name:
            continue
        size = leaf.size if "embed/" not in name else CONFIG.decoder.vocab_size * 24  # unpadded
        if name.startswith(("encoder/", "enc_to_dec_proj/")) or \
                "cross_attention/key/" in name or "cross_attention/value/" in name:
            per_image += size
        else:
            per_text += size
    parts = list(flops_parts(CONFIG, text).values())
    assert parts[0] == 6 * (per_image * image + per_text * text) // (image + text)
    assert parts[1] == (12 * 2 * 16 * image * image + 12 * 2 * 24 * text * (text + image)) // 19
