"""Float32 parity with HF's VisionEncoderDecoderModel (a ViTModel and a GPT-2 with cross-attention)
on a random small model of odd shapes, through the library's importer (`hf.load`) and exporter
(`hf.save`): the logits agree within 1e-4, greedy captions equal HF's `generate`, and the
parameter counts are equal."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxformer import count_params
from jaxformer.generate import generate
from jaxformer.interop import UnsupportedConfigError, hf
from test_image_to_text import CONFIG

# GPT-2's activation and LayerNorm eps, ViT's defaults.
C = CONFIG.replace(decoder=dataclasses.replace(CONFIG.decoder, activation="gelu_tanh",
                                               norm_eps=1e-5))


def hf_model(config=C):
    from transformers import (GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel,
                              VisionEncoderDecoderModel)

    e, d = config.encoder, config.decoder
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=e.image_size, patch_size=e.patch_size,
                             num_channels=e.num_channels, hidden_size=e.d_model,
                             num_hidden_layers=e.num_layers, num_attention_heads=e.num_heads,
                             intermediate_size=e.mlp_dim, layer_norm_eps=e.norm_eps),
                   add_pooling_layer=False)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=d.vocab_size, n_positions=d.max_seq_len,
                                      n_embd=d.d_model, n_layer=d.num_layers, n_head=d.num_heads,
                                      n_inner=d.mlp_dim, add_cross_attention=True, is_decoder=True,
                                      initializer_range=0.3, bos_token_id=d.decoder_start_token_id,
                                      eos_token_id=None))
    model = VisionEncoderDecoderModel(encoder=vit, decoder=gpt2).eval()
    model.config.decoder_start_token_id = d.decoder_start_token_id
    model.config.pad_token_id = 0
    with torch.no_grad():  # random norms and biases too, so that a mix-up shows
        for name, p in model.named_parameters():
            if "ln" in name or "layernorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit_gpt2")
    model = hf_model()
    model.save_pretrained(path)
    return path, model


def inputs():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    tokens = rng.integers(0, C.decoder.vocab_size, size=(2, 6))
    return images, tokens


def hf_logits(model, images, tokens):
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                     decoder_input_ids=torch.from_numpy(tokens)).logits.numpy()


def test_import_matches_hf(checkpoint):
    path, reference = checkpoint
    config, model = hf.load(path)
    assert config.encoder == C.encoder
    assert config.decoder == dataclasses.replace(C.decoder, vocab_pad_multiple=config.decoder.vocab_pad_multiple)
    assert count_params(config) == reference.num_parameters()  # tied weights once, as HF counts
    images, tokens = inputs()
    got = model(jnp.asarray(images), jnp.asarray(tokens, jnp.int32)).logits
    np.testing.assert_allclose(np.asarray(got), hf_logits(reference, images, tokens), atol=1e-4)


def test_greedy_captions_match_hf_generate(checkpoint):
    path, reference = checkpoint
    _, model = hf.load(path)
    images, _ = inputs()
    new = C.decoder.max_seq_len - 1
    ours = generate(model, jnp.asarray(images), max_new_tokens=new, temperature=0.0)
    with torch.no_grad():
        theirs = reference.generate(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                                    max_new_tokens=new, do_sample=False, num_beams=1).numpy()
    np.testing.assert_array_equal(np.asarray(ours), theirs[:, 1:])
    assert len(set(theirs[:, 1:].ravel().tolist())) > 2  # varied captions, not one repeated token


def test_export_round_trip(checkpoint, tmp_path):
    from transformers import VisionEncoderDecoderModel

    path, reference = checkpoint
    config, model = hf.load(path)
    hf.save(tmp_path, config, model)
    again = VisionEncoderDecoderModel.from_pretrained(tmp_path).eval()
    images, tokens = inputs()
    np.testing.assert_allclose(hf_logits(again, images, tokens),
                               hf_logits(reference, images, tokens), atol=1e-5)


def test_refuses_what_it_cannot_express(checkpoint, tmp_path):
    path, _ = checkpoint
    config, model = hf.load(path)
    rms = config.replace(decoder=dataclasses.replace(config.decoder, norm="rmsnorm"))
    with pytest.raises(UnsupportedConfigError, match="decoder.norm"):
        hf.save(tmp_path / "out", rms, model)
    bert_decoder = hf.read_config(path)
    bert_decoder["decoder"]["model_type"] = "bert"
    with pytest.raises(UnsupportedConfigError, match="'vit' encoder and a 'gpt2' decoder"):
        hf.config_from_hf(bert_decoder)
