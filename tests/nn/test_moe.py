"""Mixture of experts against naive references: a loop over tokens and experts, the capacity rule
written out token by token, the auxiliary losses by hand in numpy; top-2 routing that drops tokens
with the slots and the order of service worked out by hand; the auxiliary losses' gradient of the
router, by hand, inside the training objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.moe import ROUTERS, MoE
from jaxformer.nn.norms import make_norm
from support.moe_reference import D, E, I, expert, naive


def make(router="topk_softmax", dispatch="dropless", top_k=2, activation="swiglu", **kw):
    return MoE(D, I, E, top_k=top_k, router=router, dispatch=dispatch, activation=activation,
               init=jax.nn.initializers.normal(0.5), rngs=nnx.Rngs(0), **kw)


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


# The capacity rule, read from MoE.capacity: each expert of a row takes at most
#     C = max(1, ceil(k * T * factor / E))
# assignments, T the row's length in positions (padding included), factor the capacity factor
# while training (a dropout key) and the evaluation factor otherwise, taken as the decimal it is
# written as. The slot counts below are that arithmetic done by hand.
run_moe = nnx.jit(lambda m, x, mask, training: m(x, mask, training=training),
                  static_argnames="training")

# Routing by hand: token i is the unit vector e_i, so its router logits are row i of the router
# kernel: 2 for its first choice, 1 for its second, 0 elsewhere (weights softmax([2, 1])).
# Token 0 is padding: it chose expert 0 first, but must take no slot.
CHOICES = [(0, 1), (0, 1), (0, 2), (0, 1), (0, 3), (1, 0), (1, 2), (2, 0), (3, 1)]
# Training, factor 0.6: C = ceil(2 * 9 * 0.6 / 4) = ceil(2.7) = 3 slots per expert.
#   first choices, in token order: expert 0 <- 1, 2, 3 (slots 0-2), 4 dropped (a fourth first
#     choice); expert 1 <- 5, 6; expert 2 <- 7; expert 3 <- 8.
#   then second choices, in token order: 1 -> expert 1 slot 2; 2 -> expert 2 slot 1;
#     3 -> expert 1 full; 4 -> expert 3 slot 1; 5 -> expert 0 full; 6 -> expert 2 slot 2;
#     7 -> expert 0 full; 8 -> expert 1 full.
# Token 3's second choice loses to token 5's and 6's later first choices: first choices come first.
KEPT_TRAINING = [(False, False), (True, True), (True, True), (True, False), (False, True),
                 (True, False), (True, True), (True, False), (True, False)]
# Evaluation, factor 1.0: C = ceil(2 * 9 * 1.0 / 4) = ceil(4.5) = 5 (floor or round-half-even
# would give 4). Expert 0 takes first choices 1-4 and token 5's second choice (slot 4); token 7's
# second choice finds it full. Expert 1: first choices 5, 6, second choices 1, 3, 8 (slots 2-4).
KEPT_EVAL = [(False, False)] + [(True, True)] * 6 + [(True, False), (True, True)]


def test_top2_capacity_drops_by_hand():
    """Top-2 with too few slots: which assignments are served, and each token's output (the sum of
    its served experts' outputs, weighted), against the table worked out above."""
    moe = make("topk_softmax", "capacity", 2, capacity_factor=0.6, eval_capacity_factor=1.0)
    kernel = np.zeros((D, E), np.float32)
    for i, (first, second) in enumerate(CHOICES):
        kernel[i, first], kernel[i, second] = 2.0, 1.0
    moe.router.kernel.set_value(jnp.asarray(kernel))
    t = len(CHOICES)
    x = np.eye(t, D, dtype=np.float32)[None]
    mask = np.arange(t)[None] > 0
    w = {k: np.asarray(v, np.float64) for k, v in moe.weights().items()}
    gates = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()
    assert moe.capacity(t, True) == 3 and moe.capacity(t, False) == 5
    for training, table in ((True, KEPT_TRAINING), (False, KEPT_EVAL)):
        y, _, stats = run_moe(moe, jnp.asarray(x), jnp.asarray(mask), training)
        want = np.zeros((t, D))
        for i, choices in enumerate(CHOICES):
            for e, gate, served in zip(choices, gates, table[i]):
                if served:
                    want[i] += gate * expert(moe, w, e, x[0, i])
        np.testing.assert_allclose(np.asarray(y)[0], want, atol=1e-5,
                                   err_msg=f"training={training}")
        dropped = sum(not served for row in table[1:] for served in row)  # real tokens only
        assert float(stats["moe/dropped_fraction"]) == pytest.approx(dropped / 16)
    # the naive loop's capacity rule agrees with the hand tables
    assert naive(moe, x, mask, capacity=3)[1][0].tolist() == [list(r) for r in KEPT_TRAINING]
    assert naive(moe, x, mask, capacity=5)[1][0].tolist() == [list(r) for r in KEPT_EVAL]


@pytest.mark.parametrize("tokens,factor,slots", [
    (9, 0.6, 3),     # 2.7 -> 3
    (10, 0.1, 1),    # 0.5 -> 1
    (3, 0.1, 1),     # 0.15 -> 1 (and never less than one slot)
    (100, 1.1, 55),  # exactly 55 (in floats 2 * 100 * 1.1 / 4 = 55.00000000000001: not 56)
])
def test_top2_slot_count(tokens, factor, slots):
    """Every token chooses expert 0 first and expert 1 second, so each expert serves its first C
    tokens and nothing else: exactly C tokens get an output, and they are the first C."""
    moe = make("topk_softmax", "capacity", 2, capacity_factor=factor)
    kernel = np.zeros((D, E), np.float32)
    kernel[0, 0], kernel[0, 1] = 2.0, 1.0
    moe.router.kernel.set_value(jnp.asarray(kernel))
    x = np.zeros((1, tokens, D), np.float32)
    x[..., 0] = 1.0
    y, _, stats = run_moe(moe, jnp.asarray(x), jnp.ones((1, tokens), bool), True)
    served = np.abs(np.asarray(y)[0]).max(-1) > 0
    assert served.tolist() == [True] * slots + [False] * (tokens - slots)
    assert float(stats["moe/dropped_fraction"]) == pytest.approx((tokens - slots) / tokens)


def test_top2_random_routing_drops_as_the_naive_loop():
    """Random routing at factor 0.5 (C = ceil(2 * 10 * 0.5 / 4) = ceil(2.5) = 3): drops first
    and second choices, each as the token-by-token loop decides; 2 or 4 slots would not match."""
    for router in ROUTERS:
        moe = make(router, "capacity", 2, capacity_factor=0.5)
        x = jax.random.normal(jax.random.key(4), (2, 10, D))
        y, _, stats = run_moe(moe, x, jnp.ones((2, 10), bool), True)
        want, kept = naive(moe, x, capacity=3)
        np.testing.assert_allclose(y, want, atol=1e-5, err_msg=router)
        assert (~kept[..., 0]).any() and (~kept[..., 1]).any()  # first and second choices drop
        assert float(stats["moe/dropped_fraction"]) == pytest.approx((~kept).mean())
        for other in (2, 4):
            assert (naive(moe, x, capacity=other)[1] != kept).any()


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


def test_auxiliary_losses_reach_the_router_gradient(monkeypatch):
    """The training objective's gradient of the router kernel: with the auxiliary losses weighted
    (task.aux_weights; unlisted names weigh 1) it is the gradient without them (weights 0) plus
    each weight times the auxiliary loss's gradient, written out by hand from the router's input:

        load balancing  c * E * sum_e f_e P_e:  d/dlogits_t = c * E / n * p_t * (f - <p_t, f>)
        router z-loss   c / n * sum_t lse_t^2:  d/dlogits_t = c / n * 2 lse_t p_t

    (f_e the share of tokens whose top 2 holds e, a constant; P_e the mean probability;
    n tokens), and dW = X^T dlogits. Capacity 0.5 drops tokens, which changes neither."""
    from jaxformer.config import Config
    from jaxformer.finetune.trainable import trainable_filter
    from jaxformer.models import build_model
    from jaxformer.models.config import DecoderConfig
    from jaxformer.nn import moe_dispatch
    from jaxformer.tasks import make_task
    from jaxformer.tasks.base import TaskConfig
    from jaxformer.train.step import make_objective

    c_lb, c_z = 0.5, 0.2
    model_config = DecoderConfig(vocab_size=64, d_model=32, num_layers=1, num_heads=4,
                                 max_seq_len=16, moe_num_experts=E, moe_top_k=2, moe_mlp_dim=16,
                                 moe_dispatch="capacity", moe_capacity_factor=0.5,
                                 moe_aux_loss_coef=c_lb, moe_z_loss_coef=c_z)
    tokens = np.random.default_rng(0).integers(0, 64, (2, 17)).astype(np.int32)
    batch = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
             "positions": np.broadcast_to(np.arange(16, dtype=np.int32), (2, 16)),
             "segment_ids": np.ones((2, 16), np.int32), "loss_mask": np.ones((2, 16), np.float32)}
    key = jax.random.key(0)
    graphdef, params, frozen = nnx.split(build_model(model_config, rngs=nnx.Rngs(0)),
                                         trainable_filter(Config().train.trainable), ...)
    zero = {"load_balancing_loss": 0.0, "router_z_loss": 0.0}
    weighted = {"load_balancing_loss": 3.0, "router_z_loss": 5.0}
    objectives = [make_objective(graphdef, make_task(config), config, normalize=True)
                  for config in (Config(model=model_config, task=TaskConfig("causal_lm", w))
                                 for w in (zero, {}, weighted))]
    # The router's input X, recorded while the objective is traced (one compile for everything).
    seen = []
    route = moe_dispatch.route
    monkeypatch.setattr(moe_dispatch, "route",
                        lambda moe, kernel, x, mask: seen.append(x) or route(moe, kernel, x, mask))

    def grads_and_input(params):
        grads = [jax.grad(lambda p: objective(p, frozen, batch, key)[0])(params)
                 for objective in objectives]
        objectives[0](params, frozen, batch, key)  # a plain forward: its X is no grad's tracer
        return [g["layers"][0]["feed_forward"]["router"]["kernel"][...] for g in grads], seen[-1]

    grads, x = jax.jit(grads_and_input)(params)
    without, default, got = (np.asarray(g, np.float64) for g in grads)
    x = np.asarray(x, np.float64).reshape(-1, 32)
    kernel = np.asarray(params["layers"][0]["feed_forward"]["router"]["kernel"][...], np.float64)
    logits = x @ kernel
    n = len(x)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top2 = np.argsort(-logits, axis=-1)[:, :2]
    f = np.array([(top2 == e).any(-1).mean() for e in range(E)])
    lse = np.log(np.exp(logits).sum(-1))
    d_lb = x.T @ (c_lb * E / n * p * (f - (p @ f)[:, None]))
    d_z = x.T @ (c_z / n * 2 * lse[:, None] * p)
    assert np.abs(without).max() > 1e-3  # the main loss reaches the router through the gates
    for name, grad, (w_lb, w_z) in (("default", default, (1.0, 1.0)),
                                    ("weighted", got, (3.0, 5.0))):
        want = without + w_lb * d_lb + w_z * d_z
        np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6, err_msg=name)
        assert np.abs(grad - without).max() > 1e-4  # the auxiliary part is well above atol


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
