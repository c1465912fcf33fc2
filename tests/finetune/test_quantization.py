"""Weight-only quantization: each format's round-trip error within its bound, the NF4 code equal
to the published NormalFloat values (recomputed here from normal quantiles, and qwix's copy),
4-bit packing that round-trips, quantized matmuls equal to dequantize-then-matmul, and whole
models through `jaxformer.quantize` (smaller, close, QLoRA with B = 0 equal to the quantized
base); QLoRA with non-zero adapters equal to a float model holding dequant(W) + (alpha / r) A B,
and dequantizing such a model keeps its adapters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxformer
from jaxformer.finetune import lora as L
from jaxformer.models import DecoderConfig, build_model
from jaxformer.nn import qformats
from jaxformer.nn.linear import Linear
from jaxformer.nn.quantized import QuantizedLinear
from jaxformer.quantization import dequantize_model, weight_bytes

W = jax.random.normal(jax.random.key(0), (2, 256, 48)) * jnp.linspace(0.1, 3.0, 48)  # [lead, in, out]


def test_nf4_values_are_the_published_normal_float_code():
    # QLoRA's construction (bitsandbytes create_normal_map): normal quantiles at offset 0.9677083,
    # 8 positive values, 7 negative ones and an exact zero, scaled to [-1, 1].
    from scipy import stats  # the dev extra
    offset = 0.9677083
    positive = stats.norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    negative = -stats.norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    values = np.sort(np.concatenate([positive, [0.0], negative]))
    values /= np.abs(values).max()
    np.testing.assert_allclose(qformats.NF4_VALUES, values, atol=1e-6)
    from qwix._src.core import numerics as qwix_numerics  # the qat extra
    np.testing.assert_allclose(qformats.NF4_VALUES, np.asarray(qwix_numerics.get_nf4_buckets()),
                               atol=1e-7)


def test_nibble_packing_round_trips():
    codes = jax.random.randint(jax.random.key(1), (3, 10, 7), 0, 16).astype(jnp.uint8)
    packed = qformats.pack_nibbles(codes)
    assert packed.shape == (3, 5, 7) and packed.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(qformats.unpack_nibbles(packed)), np.asarray(codes))
    # Row 2k is the low nibble: an independent check of the byte layout.
    c = np.asarray(codes)
    np.testing.assert_array_equal(np.asarray(packed), c[:, 0::2] + 16 * c[:, 1::2])
    with pytest.raises(ValueError, match="even number"):
        qformats.pack_nibbles(codes[:, :3])


def test_int8_per_channel_error_within_half_a_step():
    parts = qformats.quantize(W, "int8")
    assert parts["qvalue"].dtype == jnp.int8 and parts["scale"].shape == (2, 1, 48)
    scale = np.abs(np.asarray(W)).max(axis=1, keepdims=True) / 127
    error = np.abs(np.asarray(qformats.dequantize(parts, "int8")) - np.asarray(W))
    assert (error <= scale / 2 + 1e-6).all()


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_groupwise_error_within_half_a_step(group):
    parts = qformats.quantize(W, "int4", group)
    assert parts["packed"].shape == (2, 128, 48) and parts["scale"].shape == (2, 256 // group, 48)
    groups = np.asarray(W).reshape(2, 256 // group, group, 48)
    step = np.abs(groups).max(axis=2, keepdims=True) / 7
    error = np.abs(np.asarray(qformats.dequantize(parts, "int4")).reshape(groups.shape) - groups)
    assert (error <= step / 2 + 1e-6).all()
    with pytest.raises(ValueError, match="not a multiple of the group size 144"):
        qformats.quantize(W, "int4", 48 * 3)  # 144 does not divide 256


def test_nf4_error_bound_and_double_quantized_scales():
    parts = qformats.quantize(W, "nf4")
    assert parts["packed"].dtype == jnp.uint8 and parts["packed"].shape == (2, 128, 48)
    assert parts["absmax_q"].dtype == jnp.int8 and parts["absmax_q"].shape == (2, 4, 48)
    assert parts["absmax_scale"].shape == (2, 1)  # 4 x 48 = 192 block scales: one block of 256
    blocks = np.asarray(W).reshape(2, 4, 64, 48)
    absmax = np.abs(blocks).max(axis=2, keepdims=True)
    stored = np.asarray(qformats.nf4_absmax(parts))[:, :, None, :]
    # The scales' own 8-bit quantization: within half a step of their block's range / 127.
    centered = absmax - absmax.mean(axis=(1, 2, 3), keepdims=True)
    dq_step = np.abs(centered).max(axis=(1, 2, 3), keepdims=True) / 127
    assert (np.abs(stored - absmax) <= dq_step / 2 + 1e-6).all()
    half_gap = np.diff(qformats.NF4_VALUES).max() / 2
    error = np.abs(np.asarray(qformats.dequantize(parts, "nf4")).reshape(blocks.shape) - blocks)
    assert (error <= absmax * half_gap + np.abs(stored - absmax) + 1e-6).all()
    # Every code is one of the 16 values, times the stored scale.
    codes = np.asarray(qformats.unpack_nibbles(parts["packed"])).reshape(blocks.shape)
    np.testing.assert_allclose(np.asarray(qformats.dequantize(parts, "nf4")).reshape(blocks.shape),
                               qformats.NF4_VALUES[codes] * stored, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fmt", qformats.FORMATS)
def test_quantized_matmul_equals_dequantize_then_matmul(fmt):
    linear = Linear((64,), (4, 8), in_axes=("embed",), out_axes=("heads", "head_dim"),
                    rngs=nnx.Rngs(0))
    linear.bias.set_value(jax.random.normal(jax.random.key(2), (4, 8)))
    q = QuantizedLinear.from_linear(linear, fmt, group_size=32)
    x = jax.random.normal(jax.random.key(3), (2, 5, 64))
    kernel = np.asarray(q.dequantized_kernel()).reshape(64, 32)
    want = (np.asarray(x).reshape(10, 64) @ kernel).reshape(2, 5, 4, 8) + np.asarray(linear.bias.get_value())
    np.testing.assert_allclose(np.asarray(q(x)), want, rtol=1e-5, atol=1e-5)
    # and close to the float layer it replaced
    assert np.abs(np.asarray(q(x)) - np.asarray(linear(x))).max() < {"int8": 0.01, "int4": 0.1,
                                                                       "nf4": 0.08}[fmt]


CONFIG = DecoderConfig(vocab_size=64, d_model=128, num_layers=2, num_heads=4, max_seq_len=32,
                       vocab_pad_multiple=1, tie_embeddings=False)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 16)), jnp.int32)


def expected_bytes(module, fmt: str, group: int = 64) -> int:
    """The formats' layouts, counted by hand: int8 a byte a weight and a float32 per output
    column; int4 half a byte a weight and a float32 per group; nf4 half a byte a weight, an int8
    absmax per block of 64, a float32 per 256 absmaxes and one float32 mean per matrix."""
    d_in, d_out = int(np.prod(module.in_shape)), int(np.prod(module.out_shape))
    weights = d_in * d_out
    if fmt == "int8":
        return weights + 4 * d_out
    if fmt == "int4":
        return weights // 2 + 4 * weights // group
    blocks = weights // 64
    return weights // 2 + blocks + 4 * -(-blocks // 256) + 4


@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4"])
def test_quantize_a_model(fmt):
    model = build_model(CONFIG, rngs=nnx.Rngs(0))
    q = jaxformer.quantize(model, fmt)
    quantized = [m for _, m in nnx.iter_modules(q) if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 6 * CONFIG.num_layers and isinstance(q.lm_head, Linear)  # head kept
    kernels = sum(m.num_weights for m in quantized)
    assert sum(m.weight_bytes for m in quantized) == sum(expected_bytes(m, fmt) for m in quantized)
    sizes, before = weight_bytes(q), weight_bytes(model)
    assert sizes["params"] + kernels * 4 == before["total"]
    probs = jax.nn.softmax(model(TOKENS).logits)
    qprobs = jax.nn.softmax(q(TOKENS).logits)
    assert float(jnp.abs(probs - qprobs).max()) < {"int8": 2e-3, "int4": 3e-2, "nf4": 3e-2}[fmt]
    back = dequantize_model(q)
    np.testing.assert_allclose(np.asarray(back(TOKENS).logits), np.asarray(q(TOKENS).logits),
                               atol=1e-5)


def test_qlora_adapter_on_a_quantized_base():
    model = jaxformer.quantize(build_model(CONFIG, rngs=nnx.Rngs(0)), "nf4")
    base = np.asarray(model(TOKENS).logits)
    L.attach_lora(model, targets=["query", "value"], rank=4, alpha=8, dtype="bfloat16",
                  rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(np.asarray(model(TOKENS).logits), base)
    module = model.layers[0].attention.query
    assert isinstance(module, QuantizedLinear) and module.lora.a.get_value().dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="unknown quantization format"):
        jaxformer.quantize(model, "int3")


@pytest.mark.parametrize("fmt", ["nf4", "int4"])
def test_qlora_with_trained_adapters_equals_the_dequantized_base_plus_the_update(fmt):
    """Adapters with non-zero A and B (as training leaves them) on a quantized base: the logits
    are those of a float model whose kernels are set by hand to dequant(W) + (alpha / r) A B
    (r = 4, alpha = 8: scaling 2) on the adapted layers and dequant(W) on the others. Dequantizing
    the model keeps the adapters (same logits, same factors), and merging them then gives the
    same logits from plain kernels."""
    q = jaxformer.quantize(build_model(CONFIG, rngs=nnx.Rngs(0)), fmt)
    base_logits = np.asarray(q(TOKENS).logits)
    adapted = L.attach_lora(q, targets=["query", "value", "up"], rank=4, alpha=8, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    for path, module in L.lora_modules(q).items():
        for factor in (module.lora.a, module.lora.b):
            factor.set_value(jnp.asarray(rng.normal(0, 0.1, factor.get_value().shape), jnp.float32))
    logits = np.asarray(q(TOKENS).logits)
    assert np.abs(logits - base_logits).max() > 0.05  # the adapters matter

    reference = build_model(CONFIG, rngs=nnx.Rngs(0))  # embeddings, norms, biases, head as q's
    float_layers = L.linear_modules(reference)
    for path, module in L.linear_modules(q).items():
        if not isinstance(module, QuantizedLinear):
            assert path == "lm_head"
            continue
        kernel = np.asarray(module.dequantized_kernel(), np.float64)
        if path in adapted:
            a = np.asarray(module.lora.a.get_value(), np.float64)
            b = np.asarray(module.lora.b.get_value(), np.float64)
            update = 2.0 * a.reshape(-1, 4) @ b.reshape(4, -1)
            kernel = kernel + update.reshape(kernel.shape)
        float_layers[path].kernel.set_value(jnp.asarray(kernel, jnp.float32))
    assert len(adapted) == 3 * CONFIG.num_layers
    np.testing.assert_allclose(logits, np.asarray(reference(TOKENS).logits), atol=1e-4)

    back = dequantize_model(q)
    assert not [m for _, m in nnx.iter_modules(back) if isinstance(m, QuantizedLinear)]
    assert sorted(L.lora_modules(back)) == sorted(adapted)
    for path, adapter in L.adapter_weights(q).items():
        kept = L.adapter_weights(back)[path]
        np.testing.assert_array_equal(kept.a, adapter.a)
        np.testing.assert_array_equal(kept.b, adapter.b)
        assert kept.alpha == adapter.alpha
    np.testing.assert_allclose(np.asarray(back(TOKENS).logits), logits, atol=1e-5)
    merged = L.merge_and_unload(back)
    assert not L.lora_modules(merged)
    np.testing.assert_allclose(np.asarray(merged(TOKENS).logits), logits, atol=1e-4)
