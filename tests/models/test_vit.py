"""ViT against HuggingFace transformers: small random models of odd shapes (20 px images, 5 px
patches, head dim 6, a 37-wide MLP) saved with `save_pretrained`, loaded by `jaxformer.interop.hf`,
must give HF's float32 outputs within 1e-4, at the config's image size and at other sizes through
position interpolation. Also: the bicubic resize against torch's, the published parameter counts.
"""

import numpy as np
import pytest
import torch
import transformers

import jax.numpy as jnp
from flax import nnx

from jaxformer import count_params
from jaxformer.interop import hf
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.models import build_model
from jaxformer.models.vit_config import ViTConfig
from jaxformer.nn.patches import bicubic_matrix, interpolate_grid, patchify

ATOL = 1e-4
SMALL = dict(hidden_size=18, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
             image_size=20, patch_size=5, num_channels=3, layer_norm_eps=1e-6)


def randomise(model):
    """Every weight, bias and norm scale random, so a swapped or mis-transposed tensor shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = "norm" in name and name.endswith("weight") and p.ndim == 1
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if scale else 0.2 * torch.randn_like(p))
    return model.eval()


def images(batch, height, width, channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, height, width, channels)).astype(np.float32)


def torch_run(model, x, interpolate):
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2)).contiguous(),
                     interpolate_pos_encoding=interpolate)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    config = transformers.ViTConfig(**SMALL, num_labels=5)
    model = randomise(transformers.ViTForImageClassification(config))
    path = tmp_path_factory.mktemp("vit-cls")
    model.save_pretrained(path)
    return model, *hf.load(path)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    model = randomise(transformers.ViTModel(transformers.ViTConfig(**SMALL, hidden_act="gelu_new")))
    path = tmp_path_factory.mktemp("vit-model")
    model.save_pretrained(path)
    return model, *hf.load(path)


# 20x20: the config's grid (no interpolation); 35x35 up to 7x7; 15x10 down and non-square;
# 23x27: pixels past the last whole patch are dropped, as the stride-5 convolution drops them.
SIZES = [(20, 20), (35, 35), (15, 10), (23, 27)]


@pytest.mark.parametrize("size", SIZES)
def test_classifier_logits_match_hf(classifier, size):
    torch_model, config, model = classifier
    assert config.num_labels == 5 and not config.pooler
    x = images(3, *size)
    expected = torch_run(torch_model, x, interpolate=size != (20, 20)).logits.numpy()
    out = model(jnp.asarray(x))
    assert out.logits.dtype == jnp.float32 and out.pooler_output is None
    np.testing.assert_allclose(np.asarray(out.logits), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("size", [(20, 20), (30, 25)])
def test_features_and_pooler_match_hf(features, size):
    torch_model, config, model = features
    assert config.pooler and config.num_labels == 0 and config.activation == "gelu_tanh"
    x = images(2, *size, seed=3)
    expected = torch_run(torch_model, x, interpolate=size != (20, 20))
    out = model(jnp.asarray(x))
    assert out.logits is None
    np.testing.assert_allclose(np.asarray(out.last_hidden_state),
                               expected.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out.pooler_output), expected.pooler_output.numpy(),
                               atol=ATOL, rtol=0)


def test_export_round_trip_loads_in_transformers(classifier, tmp_path):
    torch_model, config, model = classifier
    hf.save(tmp_path, config, model)
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path).eval()
    x = images(2, 20, 20, seed=5)
    np.testing.assert_allclose(torch_run(again, x, False).logits.numpy(),
                               torch_run(torch_model, x, False).logits.numpy(), atol=1e-6)


@pytest.mark.parametrize("grid,new_grid", [((4, 4), (7, 7)), ((5, 5), (3, 2)), ((3, 3), (3, 3))])
def test_interpolation_equals_torch_bicubic(grid, new_grid):
    table = np.random.default_rng(0).normal(size=(grid[0] * grid[1], 6)).astype(np.float32)
    as_image = torch.from_numpy(table.reshape(1, *grid, 6)).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(as_image, size=new_grid, mode="bicubic",
                                               align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(-1, 6).numpy()
    got = interpolate_grid(jnp.asarray(table), grid, new_grid)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    # Each output is a weighted average: rows of the resize matrix sum to one.
    np.testing.assert_allclose(bicubic_matrix(grid[0], new_grid[0]).sum(1), 1.0, atol=1e-12)


def test_patchify_is_row_major_patches():
    x = np.arange(2 * 4 * 6 * 1, dtype=np.float32).reshape(2, 4, 6, 1)
    patches = np.asarray(patchify(jnp.asarray(x), 2))
    assert patches.shape == (2, 6, 2, 2, 1)
    np.testing.assert_array_equal(patches[1, 4, :, :, 0], x[1, 2:4, 2:4, 0])  # row 1, column 1


def test_published_parameter_counts():
    # HF: ViTForImageClassification base/16 with 1,000 labels; ViTModel (with its pooler).
    assert count_params(ViTConfig()) == 86_567_656
    assert count_params(ViTConfig(num_labels=0, pooler=True)) == 86_389_248


def test_preset_is_vit_base():
    from jaxformer import load_model_config

    config = load_model_config("vit-base-patch16-224")
    assert config == ViTConfig()
    assert count_params(config) == 86_567_656


def test_scanned_layers_give_the_same_outputs():
    from jaxformer.models.layers import stack_layers

    config = ViTConfig(image_size=20, patch_size=5, d_model=12, num_layers=3, num_heads=2,
                       mlp_dim=16, num_labels=4)
    model = build_model(config, rngs=nnx.Rngs(0))
    scanned = build_model(config.replace(scan_layers=True), rngs=nnx.Rngs(1))
    nnx.update(scanned, stack_layers(nnx.state(model, nnx.Param)))
    x = jnp.asarray(images(2, 20, 20))
    np.testing.assert_allclose(np.asarray(scanned(x).logits), np.asarray(model(x).logits), atol=1e-5)


@pytest.mark.parametrize("shape,message", [((2, 20, 20), "NHWC"), ((2, 20, 20, 1), "NHWC"),
                                           ((2, 4, 20, 3), "no 5x5 patch")])
def test_bad_images_are_named(shape, message):
    model = build_model(ViTConfig(image_size=20, patch_size=5, d_model=12, num_layers=1,
                                  num_heads=2, mlp_dim=16, num_labels=3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=message):
        model(jnp.zeros(shape))


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="model.image_size=20 is not a multiple of model.patch_size=6"):
        ViTConfig(image_size=20, patch_size=6)
    with pytest.raises(UnsupportedConfigError, match="qkv_bias"):
        hf.config_from_hf({"architectures": ["ViTModel"], "qkv_bias": False})
