"""CLIP towers with their own activation and LayerNorm epsilon (HF's text_config and vision_config
each have a hidden_act and a layer_norm_eps) against HuggingFace transformers: a tiny random
CLIPModel with a GELU text tower and a quick-GELU vision tower of another epsilon loads with the
same embeddings and logits, exports to a checkpoint transformers loads with the same outputs, and
the towers' own settings matter (one setting for both gives other outputs)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import transformers

import jax.numpy as jnp
from flax import nnx

from jaxformer.interop import hf
from jaxformer.models import build_model
from jaxformer.models.clip import CLIPConfig
from test_clip import ATOL, hf_clip, texts

EOS = 39
OUTPUTS = ("logits_per_text", "text_embeds", "image_embeds")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(HF model, our config, our model, tokens, attention mask, images)."""
    torch_model, config, model = hf_clip(tmp_path_factory, EOS,
                                         text=dict(hidden_act="gelu", layer_norm_eps=1e-5),
                                         vision=dict(hidden_act="quick_gelu", layer_norm_eps=0.3))
    tokens, mask = texts(EOS)
    images = np.random.default_rng(1).normal(size=(2, 20, 20, 3)).astype(np.float32)
    return torch_model, config, model, tokens, mask, images


def hf_outputs(torch_model, tokens, mask, images) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = torch_model(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
                          pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
    return {name: getattr(out, name).numpy() for name in OUTPUTS}


def outputs(model, tokens, mask, images) -> dict[str, np.ndarray]:
    out = model(jnp.asarray(tokens, jnp.int32), jnp.asarray(images), jnp.asarray(mask, jnp.int32))
    return {name: np.asarray(getattr(out, name)) for name in OUTPUTS}


def test_towers_keep_their_own_settings_and_match_hf(clip):
    torch_model, config, model, tokens, mask, images = clip
    assert (config.tower_activation("text"), config.tower_activation("vision")) == (
        "gelu", "quick_gelu")
    assert (config.tower_norm_eps("text"), config.tower_norm_eps("vision")) == (1e-5, 0.3)
    # The text tower's settings are the shared ones; the vision tower keeps what differs.
    assert (config.activation, config.norm_eps) == ("gelu", 1e-5)
    assert (config.text.activation, config.text.norm_eps) == (None, None)
    assert (config.vision.activation, config.vision.norm_eps) == ("quick_gelu", 0.3)
    expected = hf_outputs(torch_model, tokens, mask, images)
    got = outputs(model, tokens, mask, images)
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], expected[name], atol=ATOL, rtol=0, err_msg=name)
    # The text tower's settings for both towers: the image embeddings move well past ATOL.
    shared = config.replace(vision=dataclasses.replace(config.vision, activation=None,
                                                       norm_eps=None))
    other = build_model(shared, rngs=nnx.Rngs(0))
    nnx.update(other, nnx.state(model, nnx.Param))
    moved = np.abs(outputs(other, tokens, mask, images)["image_embeds"] - expected["image_embeds"])
    assert moved.max() > 100 * ATOL


def test_export_loads_in_transformers(clip, tmp_path):
    torch_model, config, model, tokens, mask, images = clip
    hf.save(tmp_path, config, model)
    written = json.loads((tmp_path / "config.json").read_text())
    assert [written["text_config"][k] for k in ("hidden_act", "layer_norm_eps")] == ["gelu", 1e-5]
    assert [written["vision_config"][k] for k in ("hidden_act", "layer_norm_eps")] == [
        "quick_gelu", 0.3]
    reloaded = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    expected = hf_outputs(torch_model, tokens, mask, images)
    for name, value in hf_outputs(reloaded, tokens, mask, images).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, rtol=0, err_msg=name)


def test_tower_settings_are_checked():
    with pytest.raises(ValueError, match="model.vision.activation='swish2'"):
        CLIPConfig(vision=dataclasses.replace(CLIPConfig().vision, activation="swish2"))
    with pytest.raises(ValueError, match="model.text.norm_eps must be positive"):
        CLIPConfig(text=dataclasses.replace(CLIPConfig().text, norm_eps=0.0))
