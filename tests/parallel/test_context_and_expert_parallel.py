"""Ring attention and expert parallelism against one device.

Ring attention alone on 2, 4 and 8 fake CPU devices (causal, full, packed segments, sliding
window, zig-zag and contiguous order), forward and gradients; then whole train steps: a packed,
sliding-window model under `mesh.context`, and MoE models under `mesh.expert` combined with data,
fsdp and tensor axes, must reproduce one device's losses (and auxiliary losses) within 1e-5. With
both an expert and a context axis, capacity is per context shard (as the docs state): the layer
equals the naive loop run on each shard's piece of the row on its own.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from jaxformer.config import Config, OptimizerConfig, TrainLoopConfig
from jaxformer.nn.chunked_attention import chunked_attention
from jaxformer.nn.ring_attention import ring_attention
from jaxformer.nn.sparse_attention import SparsePattern
from jaxformer.parallel import MeshConfig, ParallelPlan
from jaxformer.presets import load_model_config
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import init_train_state, model_graphdef
from jaxformer.train.step import make_train_step

B, T, H, KV, D = 2, 128, 4, 2, 16
SEG = jnp.asarray([[1] * 50 + [2] * 60 + [0] * 18, [1] * 128])


@pytest.mark.parametrize("n,causal,window,order", [(2, True, None, "zigzag"), (4, False, 20, "none"),
                                                   (8, True, 24, "zigzag"), (8, True, 40, "none")])
def test_ring_attention_equals_one_device(n, causal, window, order):
    """Packed segments and padding in every case (SEG); sliding windows shorter and longer than
    a device's share of the sequence."""
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (B, T, H, D))
    k = jax.random.normal(keys[1], (B, T, KV, D))
    v = jax.random.normal(keys[2], (B, T, KV, D))
    w = jax.random.normal(keys[3], q.shape) * (SEG != 0)[..., None, None]
    pattern = SparsePattern("sliding", window=window) if window else None

    def one(q, k, v):
        return chunked_attention(q, k, v, SEG, SEG, scale=0.25, causal=causal, pattern=pattern,
                                 block=16)

    def ring(q, k, v):
        return ring_attention(q, k, v, SEG, scale=0.25, causal=causal, window=window,
                              load_balance=order)

    def output_and_grads(attend):
        def both(q, k, v):
            out, vjp = jax.vjp(attend, q, k, v)
            return out, vjp(w)
        return jax.jit(both)

    mesh = jax.make_mesh((n,), ("context",), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:n])
    real = np.asarray(SEG != 0)[..., None, None]
    with jax.set_mesh(mesh):
        got, grads = output_and_grads(ring)(q, k, v)
    want, ref = output_and_grads(one)(q, k, v)
    np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=1e-5)
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, atol=1e-5)


STEPS, BATCH, SEQ = 2, 8, 64


def config(**model) -> Config:
    return Config(model=load_model_config("tiny-llama", num_layers=1, **model),
                  optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1, decay_steps=10),
                  train=TrainLoopConfig(batch_size=BATCH, seq_len=SEQ))


def batches(vocab: int, packed: bool):
    rng = np.random.default_rng(0)
    seg = np.ones((BATCH, SEQ), np.int32)
    positions = np.broadcast_to(np.arange(SEQ, dtype=np.int32), (BATCH, SEQ)).copy()
    if packed:  # two documents and padding in every row
        seg[:, 23:] = 2
        seg[:, 57:] = 0
        positions[:, 23:] -= 23
    for _ in range(STEPS):
        tokens = rng.integers(0, vocab, (BATCH, SEQ + 1)).astype(np.int32)
        yield {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "positions": positions,
               "segment_ids": seg, "loss_mask": (seg != 0).astype(np.float32)}


def train(cfg: Config, mesh_config: MeshConfig, devices, packed: bool):
    """STEPS train steps from the same init; (losses, auxiliary losses) per step."""
    plan = ParallelPlan.from_config(mesh_config, devices)
    init = functools.partial(init_train_state, cfg, jax.random.PRNGKey(0))
    shardings = plan.shardings(init)
    state = plan.create(init)
    step = make_train_step(model_graphdef(cfg), make_optimizer(cfg.optimizer), cfg, make_task(cfg),
                           state_shardings=shardings)
    losses = []
    for batch in batches(cfg.model.vocab_size, packed):
        state, metrics = plan.bind(step)(state, plan.place(batch))
        losses.append({k: float(v) for k, v in metrics.items() if k not in ("lr",)})
    return losses


def packed(cfg: Config) -> Config:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, packing=True))


def test_context_parallel_training_equals_one_device():
    """Packed documents with a sliding window, the sequence split 4 ways (and the batch 2)."""
    cfg = packed(config(sliding_window=20))
    one = train(cfg, MeshConfig(data=1), jax.devices()[:1], packed=True)
    ring = train(cfg, MeshConfig(data=2, context=4), jax.devices(), packed=True)
    for a, b in zip(one, ring):
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
        np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-4)


MOE = dict(moe_num_experts=4, moe_top_k=2, moe_mlp_dim=32)


@pytest.mark.parametrize("dispatch,mesh", [
    ("dropless", MeshConfig(data=1, fsdp=2, expert=4)),
    ("capacity", MeshConfig(data=2, expert=2, tensor=2, rules={"kv_heads": None})),
], ids=["dropless-fsdp2_expert4", "capacity-data2_expert2_tensor2"])
def test_expert_parallel_training_equals_one_device(dispatch, mesh):
    """Capacity is per sequence, so without a context axis even the dropped tokens are the same
    on every mesh. The expert axis with fsdp, and with data and tensor axes."""
    cfg = packed(config(moe_dispatch=dispatch, moe_capacity_factor=0.5, **MOE))
    one = train(cfg, MeshConfig(data=1), jax.devices()[:1], packed=True)
    many = train(cfg, mesh, jax.devices(), packed=True)
    assert one[0]["aux_load_balancing_loss"] > 0
    if dispatch == "capacity":
        assert one[0]["moe/dropped_fraction"] > 0  # half the fair share drops tokens
    for a, b in zip(one, many):
        for name in ("loss", "aux_load_balancing_loss", "aux_router_z_loss", "moe/dropped_fraction",
                     "moe/load_expert_0"):
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_expert_and_context_capacity_is_per_context_shard():
    """mesh.expert=2 x mesh.context=2: each device holds half of a row, and capacity and slot
    priority are worked out on that half alone (docs/long-sequences-and-experts.md). 16 tokens
    per row at factor 0.6: C = ceil(2 x 8 x 0.6 / 4) = ceil(2.4) = 3 slots per half, where one
    device has ceil(2 x 16 x 0.6 / 4) = ceil(4.8) = 5 for the row, so different tokens drop. The
    auxiliary losses use token sums over the whole mesh and equal one device's."""
    from flax import nnx

    from jaxformer.nn.moe import MoE
    from support.moe_reference import D as d, E as e, I as hidden, naive

    moe = MoE(d, hidden, e, top_k=2, router="topk_softmax", dispatch="capacity",
              capacity_factor=0.6, init=jax.nn.initializers.normal(0.5), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 16, d))
    mask = jnp.ones((2, 16), bool)
    run = nnx.jit(lambda m, x, mask: m(x, mask, training=True))
    plan = ParallelPlan.from_config(MeshConfig(data=1, expert=2, context=2), jax.devices()[:4])
    with plan.context():
        y, aux, stats = run(moe, x, mask)
    one_y, one_aux, one_stats = run(moe, x, mask)

    halves = [naive(moe, x[:, :8], capacity=3), naive(moe, x[:, 8:], capacity=3)]
    want = np.concatenate([h[0] for h in halves], axis=1)
    kept = np.concatenate([h[1] for h in halves], axis=1)
    whole, whole_kept = naive(moe, x, capacity=5)
    np.testing.assert_allclose(y, want, atol=1e-5)
    np.testing.assert_allclose(one_y, whole, atol=1e-5)  # one device: the row is one group
    assert (kept != whole_kept).sum() > 5  # the tokens that drop differ
    assert float(stats["moe/dropped_fraction"]) == pytest.approx((~kept).mean())  # 18 of 64
    assert float(one_stats["moe/dropped_fraction"]) == pytest.approx((~whole_kept).mean())  # 24
    for name in ("load_balancing_loss", "router_z_loss"):
        np.testing.assert_allclose(aux[name], one_aux[name], rtol=1e-5, err_msg=name)
