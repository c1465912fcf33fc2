"""Float32 parity with HF's WhisperForConditionalGeneration on a random small model of odd shapes
(d_model 36: 6 encoder heads of 6, 4 decoder heads of 9; 99 tokens; 2 encoder and 3 decoder
layers; feed-forward widths 40 and 52), through the library's importer (`hf.load`) and exporter
(`hf.save`): logits within 1e-4, also on right- and left-padded decoder batches and when decoding
token by token with the cache; parameter counts equal to HF's `num_parameters()`, the presets'
included (HF built on the meta device); the refusals."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxformer
from jaxformer import count_params
from jaxformer.interop import UnsupportedConfigError, hf
from jaxformer.models.whisper import WhisperConfig, sinusoids

SIZES = dict(vocab_size=99, num_mel_bins=10, d_model=36, encoder_layers=2, decoder_layers=3,
             encoder_attention_heads=6, decoder_attention_heads=4, encoder_ffn_dim=40,
             decoder_ffn_dim=52, max_source_positions=16, max_target_positions=24)
START, EOS = 97, 98


def hf_model(**changes):
    from transformers import WhisperConfig as HFWhisperConfig
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = HFWhisperConfig(**{**SIZES, **changes}, decoder_start_token_id=START,
                             eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS, init_std=0.2)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random norms, biases and encoder positions too, so a mix-up shows
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias") or "embed_positions" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("whisper")
    model = hf_model()
    model.save_pretrained(path)
    return path, model


def inputs(batch=2, time=7):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(batch, SIZES["num_mel_bins"], 32)).astype(np.float32)
    tokens = rng.integers(0, SIZES["vocab_size"], size=(batch, time))
    tokens[:, 0] = START
    return features, tokens


@nnx.jit
def logits(model, features, tokens, segment_ids=None):
    return model(features, tokens, segment_ids).logits


def hf_logits(model, features, tokens, mask=None):
    with torch.no_grad():
        return model(input_features=torch.from_numpy(features),
                     decoder_input_ids=torch.from_numpy(tokens),
                     decoder_attention_mask=None if mask is None else torch.from_numpy(mask)
                     ).logits.numpy()


def test_import_matches_hf(checkpoint):
    path, reference = checkpoint
    config, model = hf.load(path)
    assert config == WhisperConfig(**SIZES, decoder_start_token_id=START, eos_token_id=EOS,
                                   init_std=0.2)
    assert count_params(config) == reference.num_parameters()  # tied head once, as HF counts
    features, tokens = inputs()
    out = nnx.jit(lambda m, f, t: m(f, t))(model, jnp.asarray(features),
                                           jnp.asarray(tokens, jnp.int32))
    assert out.logits.shape == (2, 7, SIZES["vocab_size"])
    np.testing.assert_allclose(np.asarray(out.logits), hf_logits(reference, features, tokens),
                               atol=1e-4, rtol=0)
    with torch.no_grad():
        memory = reference.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(out.encoder_last_hidden_state), memory, atol=1e-4)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_decoder_batch_matches_hf(checkpoint, side):
    path, reference = checkpoint
    _, model = hf.load(path)
    features, tokens = inputs(batch=3)
    lengths = np.array([7, 4, 2])
    mask = np.zeros(tokens.shape, np.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    if side == "left":
        mask = mask[:, ::-1].copy()
    ours = logits(model, jnp.asarray(features), jnp.asarray(tokens, jnp.int32),
                  jnp.asarray(mask, jnp.int32))
    theirs = hf_logits(reference, features, tokens, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-4, rtol=0)


def test_cached_decoding_matches_hf(checkpoint):
    path, reference = checkpoint
    _, model = hf.load(path)
    features, tokens = inputs()
    theirs = hf_logits(reference, features, tokens)
    memory = nnx.jit(lambda m, f: m.encode(f))(model, jnp.asarray(features))
    decode = nnx.jit(lambda m, t, p, c, mem=None: m.decode(t, mem, decoder_positions=p, cache=c))
    cache = model.init_cache(2, tokens.shape[1])
    positions = jnp.zeros((2, 3), jnp.int32) + jnp.arange(3)
    out = decode(model, jnp.asarray(tokens[:, :3], jnp.int32), positions, cache, memory)
    steps = [out.logits]
    for t in range(3, tokens.shape[1]):
        out = decode(model, jnp.asarray(tokens[:, t:t + 1], jnp.int32),
                     jnp.full((2, 1), t, jnp.int32), out.cache)
        steps.append(out.logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, axis=1)), theirs, atol=1e-4)


def test_export_round_trip(checkpoint, tmp_path):
    from transformers import WhisperForConditionalGeneration

    path, reference = checkpoint
    config, model = hf.load(path)
    hf.save(tmp_path, config, model)
    again = WhisperForConditionalGeneration.from_pretrained(tmp_path).eval()
    features, tokens = inputs()
    np.testing.assert_allclose(hf_logits(again, features, tokens),
                               hf_logits(reference, features, tokens), atol=1e-5)
    for name, p in reference.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name].numpy(), p.numpy(), err_msg=name)


def test_random_init_counts_and_frozen_positions():
    from transformers import WhisperConfig as HFWhisperConfig
    from transformers import WhisperForConditionalGeneration

    config = WhisperConfig(**SIZES, decoder_start_token_id=START, eos_token_id=EOS)
    model = jaxformer.build_model(config, rngs=nnx.Rngs(0))
    reference = WhisperForConditionalGeneration(HFWhisperConfig(**SIZES, pad_token_id=EOS))
    assert count_params(config) == reference.num_parameters()
    assert count_params(config.replace(scan_layers=True)) == reference.num_parameters()
    # The encoder's table starts as HF's sinusoids, and no gradient reaches it.
    np.testing.assert_allclose(np.asarray(model.encoder.positions[...]),
                               reference.model.encoder.embed_positions.weight.detach().numpy(),
                               atol=1e-6)
    features, tokens = inputs()
    grads = nnx.jit(nnx.grad(lambda m, f, t: m(f, t).logits.sum()))(
        model, jnp.asarray(features), jnp.asarray(tokens, jnp.int32))
    assert np.all(np.asarray(grads["encoder"]["positions"][...]) == 0)
    assert np.any(np.asarray(grads["encoder"]["conv1"]["kernel"][...]) != 0)


@pytest.mark.parametrize("preset, sizes", [
    ("whisper-tiny", dict(d_model=384, encoder_layers=4, decoder_layers=4,
                          encoder_attention_heads=6, decoder_attention_heads=6,
                          encoder_ffn_dim=1536, decoder_ffn_dim=1536)),
    ("whisper-base", dict(d_model=512, encoder_layers=6, decoder_layers=6,
                          encoder_attention_heads=8, decoder_attention_heads=8,
                          encoder_ffn_dim=2048, decoder_ffn_dim=2048))])
def test_preset_counts_equal_hf(preset, sizes):
    from transformers import WhisperConfig as HFWhisperConfig
    from transformers import WhisperForConditionalGeneration

    config = jaxformer.load_model_config(preset)
    with torch.device("meta"):  # shapes only: nothing allocated
        reference = WhisperForConditionalGeneration(HFWhisperConfig(
            vocab_size=51865, num_mel_bins=80, max_source_positions=1500,
            max_target_positions=448, **sizes))
    assert count_params(config) == reference.num_parameters()
    assert {k: getattr(config, k) for k in sizes} == sizes
    assert (config.vocab_size, config.num_mel_bins, config.num_frames) == (51865, 80, 3000)


def test_sinusoids_as_hf_computes_them():
    from transformers.models.whisper.modeling_whisper import sinusoids as hf_sinusoids

    np.testing.assert_allclose(sinusoids(1500, 384), hf_sinusoids(1500, 384).numpy(), atol=2e-4)
    # float32 angles up to 1499 rad are rounded to 1.2e-4; in float64 the formula is exact.
    angles = np.arange(1500)[:, None] * 10000.0 ** (-np.arange(192) / 191)
    np.testing.assert_allclose(sinusoids(1500, 384), np.concatenate([np.sin(angles), np.cos(angles)], 1), atol=2e-4)


def test_wrong_frame_count_is_one_line(checkpoint):
    _, model = hf.load(checkpoint[0])
    features, tokens = inputs()
    with pytest.raises(ValueError, match=r"needs 32 frames .* got 30") as e:
        model(jnp.asarray(features[:, :, :30]), jnp.asarray(tokens, jnp.int32))
    assert "\n" not in str(e.value)


def test_refuses_what_it_cannot_express(checkpoint, tmp_path):
    path, _ = checkpoint
    config_json = hf.read_config(path)
    for key, value, match in (("scale_embedding", True, "scale_embedding"),
                              ("apply_spec_augment", True, "SpecAugment"),
                              ("tie_word_embeddings", False, "tie_word_embeddings"),
                              ("activation_function", "mish", "activation_function"),
                              ("decoder_start_token_id", 500, "decoder_start_token_id")):
        with pytest.raises(UnsupportedConfigError, match=match):
            hf.config_from_hf({**config_json, key: value})
    config, model = hf.load(path)
    with pytest.raises(UnsupportedConfigError, match="scan_layers"):
        hf.save(tmp_path / "out", config.replace(scan_layers=True), model)
    # config.json round trip: what export writes reads back as the same config.
    assert hf.config_from_hf(json.loads(json.dumps(hf.config_to_hf(config)))) == config
