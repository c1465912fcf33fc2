"""Mixture of experts against naive references: a loop over tokens and experts, the capacity rule
written out token by token, the auxiliary losses by hand in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.moe import MoE
from jaxformer.nn.norms import make_norm

D, I, E = 16, 24, 4


def make(router="topk_softmax", dispatch="dropless", top_k=2, activation="swiglu", **kw):
    return MoE(D, I, E, top_k=top_k, router=router, dispatch=dispatch, activation=activation,
               init=jax.nn.initializers.normal(0.5), rngs=nnx.Rngs(0), **kw)


def naive(moe, x, mask=None, capacity=None):
    """Loop over rows, tokens and their chosen experts; with `capacity`, each expert of a row
    takes first choices before second choices, earlier tokens first, and at most `capacity`."""
    x = np.asarray(x, np.float64)
    w = {k: np.asarray(v, np.float64) for k, v in moe.weights().items()}
    act = {"silu": lambda h: h / (1 + np.exp(-h)), "gelu": None, "relu": lambda h: np.maximum(h, 0)}
    b, t, _ = x.shape
    mask = np.ones((b, t), bool) if mask is None else np.asarray(mask)
    y = np.zeros_like(x)
    kept = np.zeros((b, t, moe.top_k), bool)
    for r in range(b):
        choices = {}
        for i in range(t):
            logits = x[r, i] @ w["router"]
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            top = np.argsort(-logits)[:moe.top_k]
            if moe.router_kind == "softmax_topk":
                weights = probs[top]
            else:
                weights = np.exp(logits[top] - logits[top].max())
                weights /= weights.sum()
            choices[i] = (top, weights)
        load = np.zeros(E, int)
        for choice in range(moe.top_k):
            for i in range(t):
                if not mask[r, i]:
                    continue
                e = choices[i][0][choice]
                if capacity is None or load[e] < capacity:
                    load[e] += 1
                    kept[r, i, choice] = True
        for i in range(t):
            for choice, (e, wt) in enumerate(zip(*choices[i])):
                if not kept[r, i, choice]:
                    continue
                h_in = x[r, i]
                up = h_in @ w["up"][e]
                h = act[moe.activation](h_in @ w["gate"][e]) * up if moe.gated else act[moe.activation](up)
                y[r, i] += wt * (h @ w["down"][e])
    return y, kept


@pytest.mark.parametrize("router", ["topk_softmax", "softmax_topk"])
@pytest.mark.parametrize("dispatch,top_k", [("dropless", 2), ("dropless", 1), ("capacity", 1),
                                            ("capacity", 2)])
def test_experts_equal_a_naive_loop_with_ample_capacity(router, dispatch, top_k):
    moe = make(router, dispatch, top_k, capacity_factor=float(E), eval_capacity_factor=float(E))
    x = jax.random.normal(jax.random.key(1), (2, 10, D))
    mask = np.ones((2, 10), bool)
    mask[1, 7:] = False  # padding rows are not routed
    y, aux, stats = moe(x, jnp.asarray(mask), training=True)
    want, _ = naive(moe, x, mask)
    np.testing.assert_allclose(np.where(mask[..., None], y, 0), want, atol=1e-5)
    assert float(stats["moe/dropped_fraction"]) == 0.0


def test_switch_capacity_drops_tokens_and_they_pass_through_the_residual():
    """Switch top-1 at capacity factor 1.0 (training) and 2.0 (evaluation): the tokens the
    capacity rule rejects get nothing from the sublayer, so a block returns them unchanged."""
    moe = make("softmax_topk", "capacity", 1, activation="relu", capacity_factor=1.0,
               eval_capacity_factor=2.0)
    x = jax.random.normal(jax.random.key(2), (2, 12, D))
    drops = {}
    for training, factor in ((True, 1.0), (False, 2.0)):
        capacity = int(np.ceil(12 * factor / E))
        y, _, stats = moe(x, training=training)
        want, kept = naive(moe, x, capacity=capacity)
        np.testing.assert_allclose(y, want, atol=1e-5)
        dropped = ~kept[..., 0]
        assert np.allclose(np.asarray(y)[dropped], 0.0)
        assert float(stats["moe/dropped_fraction"]) == pytest.approx(dropped.mean())
        drops[training] = dropped.sum()
    assert drops[True] > drops[False]  # 3 slots per expert drop more than 6

    # Through a block: a dropped token's output is its input (no norm after the residual).
    block = TransformerBlock({"feed_forward": (moe, make_norm("rmsnorm", D, eps=1e-6, rngs=nnx.Rngs(0)))})
    ctx = BlockContext(positions=jnp.zeros((2, 12), jnp.int32), dropout_rng=jax.random.key(0))
    out, _, aux = block(x, ctx)
    h = block.feed_forward_norm(x)
    _, kept = naive(moe, h, capacity=3)
    np.testing.assert_allclose(np.asarray(out)[~kept[..., 0]], np.asarray(x)[~kept[..., 0]], atol=1e-6)
    assert set(aux) >= {"load_balancing_loss", "router_z_loss", "moe/dropped_fraction"}


def test_auxiliary_losses_equal_a_hand_computation():
    moe = make("topk_softmax", "dropless", 2, aux_loss_coef=0.01, z_loss_coef=0.001)
    x = jax.random.normal(jax.random.key(3), (2, 9, D))
    mask = np.ones((2, 9), bool)
    mask[0, 6:] = False
    _, aux, stats = moe(x, jnp.asarray(mask))
    logits = np.asarray(x, np.float64) @ np.asarray(moe.router.kernel[...], np.float64)
    logits = logits[mask]  # real tokens only
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    top2 = np.argsort(-logits, axis=-1)[:, :2]
    f = np.array([(top2 == e).any(-1).mean() for e in range(E)])  # tokens that chose e (sums to 2)
    p = probs.mean(0)
    assert float(aux["load_balancing_loss"]) == pytest.approx(0.01 * E * np.sum(f * p), rel=1e-5)
    lse = np.log(np.exp(logits).sum(-1))
    assert float(aux["router_z_loss"]) == pytest.approx(0.001 * np.mean(lse ** 2), rel=1e-5)
    for e in range(E):
        assert float(stats[f"moe/load_expert_{e}"]) == pytest.approx(f[e] / 2, rel=1e-5)


def test_model_reports_losses_and_statistics():
    from jaxformer.models import build_model
    from jaxformer.models.config import DecoderConfig

    config = DecoderConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, max_seq_len=32,
                           moe_num_experts=4, moe_top_k=2, moe_dispatch="capacity",
                           moe_capacity_factor=0.5)
    model = build_model(config, rngs=nnx.Rngs(0))
    run = nnx.jit(lambda m, tokens, key: m(tokens, dropout_rng=key))  # one compile, not op by op
    out = run(model, jnp.ones((2, 16), jnp.int32) * jnp.arange(16), jax.random.key(0))
    assert set(out.aux) == {"load_balancing_loss", "router_z_loss"}
    loads = [float(out.stats[f"moe/load_expert_{e}"]) for e in range(4)]
    assert sum(loads) == pytest.approx(1.0, rel=1e-5)  # averaged over layers
    assert 0.0 < float(out.stats["moe/dropped_fraction"]) < 1.0  # capacity 0.5 drops some
    with pytest.raises(ValueError, match="moe_top_k"):
        config.replace(moe_top_k=5)
