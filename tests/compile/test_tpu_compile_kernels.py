"""Attention and expert kernels on sharded TPU meshes, compiled from this CPU host, and the
per-device wrapper that makes that possible checked for numbers on a CPU mesh.

Splash attention is a Mosaic kernel, which XLA cannot partition: it must run inside shard_map
(nn/kernel_sharding.py). The references: the kernel count in the compiled HLO, the collectives
ring attention and expert parallelism need, and, on a CPU mesh in interpret mode, the dense
attention's logits.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.commands.compile import compile_report, load_run_config
from jaxformer.models import build_model
from jaxformer.parallel import ParallelPlan
from jaxformer.parallel.config import MeshConfig
from jaxformer.presets import load_model_config

SHARDED = ["mesh.data=1", "mesh.fsdp=4", "train.batch_size=8", "train.seq_len=128",
           "model.attention_impl=auto"]


@pytest.mark.parametrize("case", [["data.packing=true", "model.sliding_window=32"],
                                  ["model.sparse_pattern=strided", "model.sparse_stride=32"]],
                         ids=["packed-sliding", "sparse"])
def test_splash_lowers_every_mask_on_four_chips(case):
    report = compile_report(load_run_config("tiny-gpt2", SHARDED + case, 1), "v5e-4")
    assert report["attention_impl"] == "splash"
    assert report["mosaic_kernels"] == 8  # per layer: forward, its recomputation (remat auto), dq, dkv


def test_a_length_splash_cannot_tile_on_a_tpu_falls_back_to_chunked():
    """The TPU kernel computes keys 128 at a time (interpret mode would take 64)."""
    overrides = ["mesh.data=1", "mesh.fsdp=4", "train.batch_size=8", "train.seq_len=64",
                 "model.attention_impl=auto"]
    report = compile_report(load_run_config("tiny-gpt2", overrides, 1), "v5e-4")
    assert report["mosaic_kernels"] == 0 and report["attention_impl"].startswith("chunked")


def test_splash_splits_heads_over_a_tensor_axis_with_grouped_kv_heads():
    overrides = ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2", "train.batch_size=8",
                 "train.seq_len=128", "model.attention_impl=auto"]
    report = compile_report(load_run_config("tiny-llama", overrides, 1), "v5e-4")
    assert report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    assert report["mosaic_kernels"] == 8


def test_ring_attention_on_a_context_axis_passes_blocks_round_the_ring():
    overrides = ["mesh.data=1", "mesh.context=4", "train.batch_size=4", "train.seq_len=128"]
    report = compile_report(load_run_config("tiny-gpt2", overrides, 1), "v5e-4")
    assert report["mesh"]["context"] == 4
    assert report["collectives"]["collective-permute"]["count"] > 0


def test_experts_travel_all_to_all_on_an_expert_axis():
    overrides = ["mesh.data=1", "mesh.expert=4", "train.batch_size=8", "model.moe_dispatch=capacity"]
    report = compile_report(load_run_config("shakespeare_char_cpu_moe", overrides, 1), "v5e-4")
    assert report["mesh"]["expert"] == 4
    assert report["collectives"]["all-to-all"]["count"] > 0


@pytest.mark.parametrize("kv_heads, mesh", [(2, {"fsdp": 2, "tensor": 2}), (1, {"data": 1, "tensor": 4})],
                         ids=["gqa-split", "mqa-repeated"])
def test_the_per_device_kernel_computes_what_dense_attention_does(kv_heads, mesh):
    """splash in interpret mode, called per device on a 4-device CPU mesh (heads split over the
    tensor axis; a single key/value head repeated so each device holds the one its heads read),
    against the dense XLA attention on the same mesh."""
    config = load_model_config("tiny-llama", num_kv_heads=kv_heads, num_heads=4)
    tokens = jax.random.randint(jax.random.key(0), (4, 128), 0, config.vocab_size)
    positions = jnp.broadcast_to(jnp.arange(128), tokens.shape)
    plan = ParallelPlan.from_config(MeshConfig(num_devices=4, data=mesh.get("data", -1),
                                               fsdp=mesh.get("fsdp", 1), tensor=mesh["tensor"]))
    outputs = {}
    for impl in ("splash", "xla"):
        model = build_model(config.replace(attention_impl=impl), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        with plan.context():
            outputs[impl] = jax.jit(lambda s: nnx.merge(graphdef, s)(tokens, positions).logits)(state)
    np.testing.assert_allclose(outputs["splash"], outputs["xla"], atol=2e-5, rtol=2e-5)
