"""CLIP against HuggingFace transformers (small random CLIPModels of odd shapes saved with
`save_pretrained` and loaded by `jaxformer.interop.hf`, both of HF's end-of-text pooling rules,
padded texts, interpolated image positions), the contrastive loss against a naive loop, and the
published parameter count."""

import math

import numpy as np
import pytest
import torch
import transformers

import jax
import jax.numpy as jnp

from jaxformer import count_params
from jaxformer.interop import hf
from jaxformer.models.clip import contrastive_loss, eos_positions
from jaxformer.models.clip_config import CLIPConfig
from jaxformer.tasks.contrastive import contrastive_sums

ATOL = 1e-4
TEXT = dict(hidden_size=18, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
            vocab_size=41, max_position_embeddings=11)
VISION = dict(hidden_size=14, num_hidden_layers=2, num_attention_heads=2, intermediate_size=23,
              image_size=20, patch_size=5, num_channels=3)


def hf_clip(tmp_path_factory, eos_token_id, text=None, vision=None):
    """A random HF CLIPModel of the small shapes (`text`, `vision`: more config.json settings of
    a tower), saved, and (it, its jaxformer config, the jaxformer model) loaded from there."""
    config = transformers.CLIPConfig(
        text_config={**TEXT, "eos_token_id": eos_token_id, **(text or {})},
        vision_config={**VISION, **(vision or {})}, projection_dim=9)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            scale = "norm" in name and name.endswith("weight")
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if scale else 0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp(f"clip-eos{eos_token_id}")
    model.eval().save_pretrained(path)
    return model, *hf.load(path)


def texts(eos_token_id):
    """Rows of random words ending in end-of-text, then padding (id 0) of different lengths."""
    rng = np.random.default_rng(0)
    lengths = [11, 7, 4]
    tokens = np.zeros((3, 11), np.int64)
    for row, n in enumerate(lengths):
        tokens[row, :n - 1] = rng.integers(3, 39, size=n - 1)
        tokens[row, n - 1] = 40 if eos_token_id == 2 else eos_token_id  # 40: the largest id
    mask = (np.arange(11)[None] < np.array(lengths)[:, None]).astype(np.int64)
    return tokens, mask


@pytest.mark.parametrize("eos_token_id", [2, 39])
def test_clip_matches_hf(tmp_path_factory, eos_token_id):
    torch_model, config, model = hf_clip(tmp_path_factory, eos_token_id)
    assert config.text.eos_token_id == eos_token_id and config.activation == "quick_gelu"
    tokens, mask = texts(eos_token_id)
    for size in [(20, 20), (25, 30)]:  # the config's grid, then interpolated positions
        images = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32)
        with torch.no_grad():
            expected = torch_model(input_ids=torch.from_numpy(tokens),
                                   attention_mask=torch.from_numpy(mask),
                                   pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                                   interpolate_pos_encoding=size != (20, 20))
        out = model(jnp.asarray(tokens, jnp.int32), jnp.asarray(images),
                    jnp.asarray(mask, jnp.int32))
        for name in ("logits_per_text", "logits_per_image", "text_embeds", "image_embeds"):
            np.testing.assert_allclose(np.asarray(getattr(out, name)),
                                       getattr(expected, name).numpy(), atol=ATOL, rtol=0,
                                       err_msg=name)
        real = mask.astype(bool)  # padded positions' states are not defined the same way
        np.testing.assert_allclose(np.asarray(out.last_hidden_state)[real],
                                   expected.text_model_output.last_hidden_state.numpy()[real],
                                   atol=ATOL, rtol=0)
        with torch.no_grad():
            vision = torch_model.vision_model(
                pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                interpolate_pos_encoding=size != (20, 20))
        np.testing.assert_allclose(np.asarray(out.pooler_output), vision.pooler_output.numpy(),
                                   atol=ATOL, rtol=0)


def test_eos_positions_follow_hf_rules():
    tokens = jnp.asarray([[1, 9, 5, 7, 0], [1, 7, 9, 7, 0]])
    np.testing.assert_array_equal(eos_positions(tokens, 2), [1, 2])  # largest id
    np.testing.assert_array_equal(eos_positions(tokens, 7), [3, 1])  # first 7


def naive_clip_loss(logits: np.ndarray) -> float:
    """HF's clip_loss written out: mean over rows of -log softmax at the diagonal, for texts and
    for images, averaged."""
    n = len(logits)
    text = [-(logits[i, i] - math.log(sum(math.exp(v) for v in logits[i]))) for i in range(n)]
    image = [-(logits[i, i] - math.log(sum(math.exp(logits[j, i]) for j in range(n))))
             for i in range(n)]
    return (sum(text) / n + sum(image) / n) / 2


def test_contrastive_loss_equals_naive_reference():
    logits = np.random.default_rng(0).normal(size=(5, 5)) * 3
    total, count = contrastive_loss(jnp.asarray(logits, jnp.float32))
    assert float(count) == 5
    assert float(total) / 5 == pytest.approx(naive_clip_loss(logits), abs=1e-5)


def test_zero_weight_pairs_are_neither_scored_nor_negatives():
    logits = np.random.default_rng(1).normal(size=(5, 5)) * 3
    weights = jnp.asarray([1, 1, 1, 0, 0], jnp.float32)
    total, count = contrastive_sums(jnp.asarray(logits, jnp.float32), weights)
    assert float(count) == 3
    assert float(total) / 3 == pytest.approx(naive_clip_loss(logits[:3, :3]), abs=1e-5)


def test_logit_scale_is_clamped_at_100():
    from flax import nnx

    from jaxformer.models import build_model

    config = CLIPConfig(text=dict_to(CLIPConfig().text, vocab_size=20, d_model=8, num_layers=1,
                                     num_heads=2, mlp_dim=8, max_seq_len=4, eos_token_id=19),
                        vision=dict_to(CLIPConfig().vision, image_size=8, patch_size=4, d_model=8,
                                       num_layers=1, num_heads=2, mlp_dim=8),
                        projection_dim=4)
    model = build_model(config, rngs=nnx.Rngs(0))
    assert float(model.scale()) == pytest.approx(1 / 0.07, rel=1e-5)
    model.logit_scale[...] = jnp.asarray(7.0)
    assert float(model.scale()) == pytest.approx(100.0, rel=1e-5)
    grad = jax.grad(lambda s: jnp.exp(jnp.minimum(s, math.log(100.0))))(7.0)
    assert float(grad) == 0.0  # past the clamp the temperature stops learning


def dict_to(section, **changes):
    import dataclasses

    return dataclasses.replace(section, **changes)


def test_published_parameter_count():
    from jaxformer import load_model_config

    config = load_model_config("clip-vit-base-patch32")
    assert config == CLIPConfig()
    assert count_params(config) == 151_277_313  # HF CLIPModel, openai/clip-vit-base-patch32
