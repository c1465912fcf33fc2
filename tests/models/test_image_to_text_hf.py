"""Float32 parity with HF's VisionEncoderDecoderModel (a ViTModel and a GPT-2 with cross-attention)
on a random small model of odd shapes: HF's weights are copied into ours through the ViT and GPT-2
tensor tables of `jaxformer.interop` plus GPT-2's cross-attention (q_attn, c_attn = key|value,
c_proj, ln_cross_attn) and HF's projection between the widths; the logits agree within 1e-4,
and the parameter counts are equal."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jaxformer import count_params
from jaxformer.interop.decoder import gpt2_tensors
from jaxformer.interop.tables import fused_qkv, reshaped
from jaxformer.interop.vit import VIT_MODEL
from jaxformer.interop.vit import tensors as vit_tensors
from jaxformer.models import build_model
from jaxformer.models.config import DecoderConfig
from test_image_to_text import CONFIG

# GPT-2's activation and LayerNorm eps, ViT's defaults.
C = CONFIG.replace(decoder=dataclasses.replace(CONFIG.decoder, activation="gelu_tanh",
                                               norm_eps=1e-5))


def hf_model():
    from transformers import (GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel,
                              VisionEncoderDecoderModel)

    e, d = C.encoder, C.decoder
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=e.image_size, patch_size=e.patch_size,
                             num_channels=e.num_channels, hidden_size=e.d_model,
                             num_hidden_layers=e.num_layers, num_attention_heads=e.num_heads,
                             intermediate_size=e.mlp_dim, layer_norm_eps=e.norm_eps),
                   add_pooling_layer=False)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=d.vocab_size, n_positions=d.max_seq_len,
                                      n_embd=d.d_model, n_layer=d.num_layers, n_head=d.num_heads,
                                      n_inner=d.mlp_dim, add_cross_attention=True, is_decoder=True,
                                      initializer_range=0.3))
    model = VisionEncoderDecoderModel(encoder=vit, decoder=gpt2).eval()
    with torch.no_grad():  # random norms and biases too, so that a mix-up shows
        for name, p in model.named_parameters():
            if "ln" in name or "layernorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def rows():
    """(HF name, our path prefix, tensor row) for every weight of the model."""
    e, d = C.encoder, C.decoder
    D, H, hd = d.d_model, d.num_heads, d.d_model // d.num_heads
    out = [("encoder.", ("encoder",), r) for r in vit_tensors(VIT_MODEL, C.encoder_config())]
    gpt2 = DecoderConfig(vocab_size=d.vocab_size, vocab_pad_multiple=d.vocab_pad_multiple,
                         d_model=D, num_layers=d.num_layers, num_heads=H, mlp_dim=d.mlp_dim,
                         max_seq_len=d.max_seq_len)
    for r in gpt2_tensors(gpt2):
        top = () if r.params[0][0] == "embed" else ("decoder",)
        out.append(("decoder.", top, r))
    for i in range(d.num_layers):
        hf, cross = f"transformer.h.{i}.", ("layers", i, "cross_attention")
        norm = ("layers", i, "cross_attention_norm")
        for row in (
                reshaped(hf + "crossattention.q_attn.weight", (D, D), cross + ("query", "kernel"),
                         (D, H, hd)),
                reshaped(hf + "crossattention.q_attn.bias", (D,), cross + ("query", "bias"), (H, hd)),
                reshaped(hf + "crossattention.c_proj.weight", (D, D), cross + ("out", "kernel"),
                         (H, hd, D)),
                reshaped(hf + "crossattention.c_proj.bias", (D,), cross + ("out", "bias"), (D,)),
                reshaped(hf + "ln_cross_attn.weight", (D,), norm + ("scale",), (D,)),
                reshaped(hf + "ln_cross_attn.bias", (D,), norm + ("bias",), (D,))):
            out.append(("decoder.", ("decoder",), row))
        for suffix in ("weight", "bias"):
            shape = (D, 2 * D) if suffix == "weight" else (2 * D,)
            key_value = _key_value(hf + f"crossattention.c_attn.{suffix}", shape, cross,
                                   "kernel" if suffix == "weight" else "bias", H, hd)
            out.append(("decoder.", ("decoder",), key_value))
    out.append(("", (), reshaped("enc_to_dec_proj.weight", (D, e.d_model),
                                 ("enc_to_dec_proj", "kernel"), (e.d_model, D), transpose=True)))
    out.append(("", (), reshaped("enc_to_dec_proj.bias", (D,), ("enc_to_dec_proj", "bias"), (D,))))
    return out


def _key_value(name, shape, prefix, suffix, heads, head_dim):
    """GPT-2's cross-attention c_attn: key|value on the last axis (as fused_qkv, two parts)."""
    row = fused_qkv(name, shape[:-1] + (3 * heads * head_dim,), prefix, suffix, heads, head_dim)

    def to_jax(w):
        split = w.reshape(*w.shape[:-1], 2, heads, head_dim)
        return tuple(np.moveaxis(split, -3, 0))

    return dataclasses.replace(row, shape=shape, params=row.params[1:], to_jax=to_jax)


def test_logits_equal_hf_vision_encoder_decoder(tmp_path):
    from safetensors.numpy import load_file

    hf = hf_model()
    assert count_params(C) == hf.num_parameters()  # tied weights once, as HF counts
    hf.save_pretrained(tmp_path)  # the tensor names checkpoints carry
    weights = load_file(tmp_path / "model.safetensors")
    model = build_model(C, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    filled = set()
    for hf_prefix, top, row in rows():
        for path, array in zip(row.params, row.to_jax(weights[hf_prefix + row.name])):
            node = pure
            for key in (top + path)[:-1]:
                node = node[key]
            assert node[(top + path)[-1]].shape == array.shape, (row.name, path)
            node[(top + path)[-1]] = jnp.asarray(array)
            filled.add(top + path)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    ours = {tuple(p) for p, _ in nnx.to_flat_state(state)}
    assert ours == filled  # every parameter came from HF

    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    tokens = rng.integers(0, C.decoder.vocab_size, size=(2, 6))
    with torch.no_grad():
        expected = hf(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                      decoder_input_ids=torch.from_numpy(tokens)).logits.numpy()
    got = model(jnp.asarray(images), jnp.asarray(tokens, jnp.int32)).logits
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)
