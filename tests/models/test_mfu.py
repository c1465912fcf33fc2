"""MFU from a hand computation: GPT-2 small at 1,024 tokens on 8 H100s.

    N  = 124,439,808 parameters - 1,024 x 768 position table          = 123,653,376
    6N                                                                = 741,920,256
    12 x layers x d_model x T = 12 x 12 x 768 x 1,024                 = 113,246,208
    FLOPs per token (PaLM appendix B)                                 = 855,166,464
    peak: H100 SXM dense bf16, 989 TFLOP/s a chip (NVIDIA's datasheet), x 8 chips
    at 1,000,000 tokens/s: 8.55166464e14 / 7.912e15                   = 0.1080847...

The FLOPs formula itself is checked against XLA's own operation count of a compiled training
gradient, an independent reference that counts every multiply-add the program does.
"""

import dataclasses
import types

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxformer.models import DecoderConfig, DecoderLM
from jaxformer.models.costs import flops_per_token
from jaxformer.presets import load_model_config
from jaxformer.train import metrics
from jaxformer.tasks.losses import masked_cross_entropy


@dataclasses.dataclass
class FakeDevice:
    """What `peak_flops_per_device` reads of a jax.Device: the platform and the device kind as
    the runtime reports it."""
    platform: str
    device_kind: str


def test_gpt2_small_on_eight_h100s_by_hand():
    config = load_model_config("gpt2-small")
    assert flops_per_token(config, 1024) == 855_166_464
    peak = metrics.peak_flops_per_device(FakeDevice("gpu", "NVIDIA H100 80GB HBM3"))
    assert peak == 989e12
    assert metrics.mfu(1_000_000, 855_166_464, peak, 8) == pytest.approx(0.1080847, rel=1e-6)


# Device kinds as the runtimes report them, and the vendors' dense bf16 peaks (TFLOP/s).
PUBLISHED_PEAKS = {
    "TPU v4": 275, "TPU v5 lite": 197, "TPU v5p": 459, "TPU v6 lite": 918,
    "NVIDIA A100-SXM4-80GB": 312, "NVIDIA H100 80GB HBM3": 989, "NVIDIA H200": 989,
}


@pytest.mark.parametrize("kind", PUBLISHED_PEAKS)
def test_peak_table_holds_the_published_figures(kind):
    assert metrics.peak_flops_per_device(FakeDevice("tpu" if "TPU" in kind else "gpu", kind)) == (
        PUBLISHED_PEAKS[kind] * 1e12)


def test_unknown_accelerator_reports_no_mfu():
    assert metrics.peak_flops_per_device(FakeDevice("gpu", "NVIDIA GeForce RTX 4090")) is None
    assert metrics.mfu(1e6, 855_166_464, None) is None


def test_throughput_over_a_log_interval(monkeypatch):
    """Two steps of 8 x 1,024 tokens in 2 s on 8 H100s: 8,192 tokens/s, MFU 8,192 x 855,166,464
    / (989e12 x 8) = 0.000885..."""
    clock = iter([100.0, 102.0, 102.0])  # start, measure, restart
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    throughput = metrics.Throughput(load_model_config("gpt2-small"), 1024, num_devices=8,
                                    peak_per_device=989e12)
    throughput.add(8 * 1024)
    throughput.add(8 * 1024)
    rates = throughput.measure()
    assert rates["tokens_per_s"] == 8192.0
    assert rates["mfu"] == pytest.approx(8192 * 855_166_464 / (989e12 * 8), rel=1e-12)


def xla_flops_per_token(config, batch: int, seq_len: int) -> float:
    """XLA's cost analysis of a training gradient (forward + backward) of `config`, per token."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0))), nnx.Param)

    def loss(params, tokens):
        logits = nnx.merge(graphdef, params)(tokens).logits
        return masked_cross_entropy(logits, tokens, jnp.ones(tokens.shape))

    lowered = jax.jit(jax.value_and_grad(loss)).lower(
        params, jax.ShapeDtypeStruct((batch, seq_len), jnp.int32))
    return lowered.cost_analysis()["flops"] / (batch * seq_len)


def test_flops_formula_matches_xlas_count_of_a_training_gradient():
    """XLA's cost analysis of forward + backward counts every FLOP of the program: the matmuls
    (which 6N + 12 L d T describes, the full score matrix included) plus the elementwise work
    (norms, GELU, softmax), about 1% here. The formula without its attention term would be 7% low,
    and 4N or 8N instead of 6N 30% off. The dense `einsum` attention computes the full score
    matrix, as the formula (PaLM's MFU convention) counts it; the CPU's blocked causal attention
    (the `xla` default here) skips most of the masked triangle, so XLA counts less work than
    the formula, though more than the formula without attention."""
    config = DecoderConfig(vocab_size=512, d_model=256, num_layers=2, num_heads=4, max_seq_len=128,
                           attention_impl="einsum")
    batch, seq_len = 2, 128
    formula = flops_per_token(config, seq_len)
    dense = xla_flops_per_token(config, batch, seq_len)
    assert formula <= dense <= 1.02 * formula, dense / formula
    blocked = xla_flops_per_token(config.replace(attention_impl="xla"), batch, seq_len)
    without_attention = formula - 12 * config.num_layers * config.d_model * seq_len
    assert without_attention < blocked < formula, (blocked / formula, without_attention / formula)
