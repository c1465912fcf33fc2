"""Scan over layers and rematerialisation change how the model is compiled, never what it computes.

References: the unrolled stack with the same weights (`stack_layers` of its state), and the model
without remat. Compile work: the scanned program is one layer body whatever the depth.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models import DecoderConfig, DecoderLM
from jaxformer.models.layers import stack_layers, unstack_layers
from jaxformer.presets import load_model_config


def unrolled_and_scanned(name: str, **changes):
    """(unrolled model, scanned model with the same weights)."""
    config = load_model_config(name, **changes)
    model = DecoderLM(config, rngs=nnx.Rngs(0))
    return model, with_config(model, config.replace(scan_layers=True), stack=True)


def with_config(model, config, stack: bool = False):
    """`model`'s weights in a model built from `config` (stacked for a scanned one)."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0))))
    state = nnx.state(model)
    return nnx.merge(graphdef, stack_layers(state) if stack else state)


def forward(model, *args, **kwargs):
    """model(*args) compiled (eager calls would compile every small op on its own), as
    (logits, cache)."""
    graphdef, state = nnx.split(model)
    out = jax.jit(lambda state, *args, **kwargs: nnx.merge(graphdef, state)(*args, **kwargs))(
        state, *args, **kwargs)
    return out.logits, out.cache


def tokens(vocab: int, batch: int = 2, time: int = 16) -> jax.Array:
    return jax.random.randint(jax.random.key(1), (batch, time), 0, vocab)


def loss_and_grads(model, tok, **kwargs):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        logits = nnx.merge(graphdef, params)(tok[:, :-1], **kwargs).logits
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(log_probs, tok[:, 1:, None], -1).mean()

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module")
def llama():
    """A 3-layer Llama-style model, unrolled and scanned, with their (loss, grads) references."""
    model, scanned = unrolled_and_scanned("tiny-llama", num_layers=3)
    tok = tokens(model.config.vocab_size)
    return {"model": model, "scanned": scanned, "tokens": tok,
            "unrolled_grads": loss_and_grads(model, tok), "scan_grads": loss_and_grads(scanned, tok)}


def test_scan_matches_unrolled_stack(llama):
    model, scanned, tok = llama["model"], llama["scanned"], llama["tokens"]
    np.testing.assert_allclose(forward(scanned, tok)[0], forward(model, tok)[0], rtol=1e-5, atol=1e-5)
    loss, grads = llama["unrolled_grads"]
    scanned_loss, scanned_grads = llama["scan_grads"]
    np.testing.assert_allclose(scanned_loss, loss, rtol=1e-6)
    # Gradients of the scanned model are the unrolled ones, stacked.
    for a, b in zip(jax.tree.leaves(stack_layers(grads)), jax.tree.leaves(scanned_grads), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_stack_and_unstack_are_inverse_and_name_the_layers_axis(llama):
    model, scanned = llama["model"], llama["scanned"]
    state = nnx.state(model, nnx.Param)
    stacked = nnx.state(scanned, nnx.Param)
    kernel = stacked["layers"]["feed_forward"]["up"]["kernel"]
    assert kernel.shape == (3, 64, 160)
    assert kernel.get_metadata()["out_sharding"] == ("layers", "embed", "mlp")
    # The stacked state has exactly the structure (and metadata) of a freshly built scanned model.
    fresh = nnx.state(nnx.eval_shape(lambda: DecoderLM(model.config.replace(scan_layers=True),
                                                       rngs=nnx.Rngs(0))), nnx.Param)
    assert jax.tree.structure(stacked) == jax.tree.structure(fresh)
    back = unstack_layers(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    # Plain dicts (nnx.to_pure_dict, as checkpoints and importers hold them) work the same way.
    pure = stack_layers(nnx.to_pure_dict(state))
    np.testing.assert_array_equal(pure["layers"]["feed_forward"]["up"]["kernel"], kernel[...])


def test_scan_with_kv_cache_decodes_like_unrolled(llama):
    model, scanned = llama["model"], llama["scanned"]
    c = model.config
    cache, scanned_cache = model.init_cache(2, 24), scanned.init_cache(2, 24)
    assert isinstance(cache, list)
    assert scanned_cache["attention"].k.shape == (3, 2, c.kv_heads, 24, c.head_size)
    tok = tokens(c.vocab_size, time=12)
    positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
    logits, cache = forward(model, tok[:, :8], positions, cache=cache)
    scanned_logits, scanned_cache = forward(scanned, tok[:, :8], positions, cache=scanned_cache)
    np.testing.assert_allclose(scanned_logits, logits, rtol=1e-5, atol=1e-5)
    decode, scanned_decode = (
        jax.jit(lambda state, *a, g=nnx.graphdef(m): (lambda o: (o.logits, o.cache))(
            nnx.merge(g, state)(*a)))
        for m in (model, scanned))
    for t in range(8, 12):  # one token at a time, at explicit positions
        pos = jnp.full((2, 1), t)
        logits, cache = decode(nnx.state(model), tok[:, t:t + 1], pos, None, cache)
        scanned_logits, scanned_cache = scanned_decode(nnx.state(scanned), tok[:, t:t + 1], pos, None,
                                                       scanned_cache)
        np.testing.assert_allclose(scanned_logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scanned_cache["attention"].v,
                               jnp.stack([layer["attention"].v for layer in cache]), atol=1e-6)
    # And the cached decode agrees with a full forward pass over the same 12 tokens.
    full, _ = forward(model, tok)
    np.testing.assert_allclose(logits[:, 0], full[:, 11], rtol=1e-4, atol=1e-5)


def test_scan_gpt2_with_dropout_uses_the_same_per_layer_keys():
    """GPT-2 style (learned positions, tied head, biases, LayerNorm) with dropout on."""
    model, scanned = unrolled_and_scanned("tiny-gpt2", num_layers=3, dropout=0.3)
    tok, key = tokens(model.config.vocab_size), jax.random.key(7)
    dropped, _ = forward(model, tok, dropout_rng=key)
    np.testing.assert_allclose(forward(scanned, tok, dropout_rng=key)[0], dropped, rtol=1e-5, atol=1e-5)
    assert not np.allclose(dropped, forward(model, tok)[0], atol=1e-3)  # dropout did act


@pytest.mark.parametrize("remat, scan", [("dots_saveable", True), ("full", False)])
def test_remat_gives_identical_loss_and_gradients(remat, scan, llama):
    model = llama["scanned"] if scan else llama["model"]
    loss, grads = llama["scan_grads" if scan else "unrolled_grads"]
    remat_loss, remat_grads = loss_and_grads(with_config(model, model.config.replace(remat=remat)),
                                             llama["tokens"])
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_bf16_compute_with_float32_params(llama):
    model, tok = llama["model"], llama["tokens"]
    bf16 = with_config(model, model.config.replace(dtype="bfloat16"))
    logits, _ = forward(bf16, tok)
    assert logits.dtype == jnp.float32  # the head's output is upcast for the loss
    loss, grads = llama["unrolled_grads"]
    bf16_loss, bf16_grads = loss_and_grads(bf16, tok)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(bf16_grads))  # params stay float32
    np.testing.assert_allclose(bf16_loss, loss, rtol=2e-2)
    # Close to the float32 gradients, but not equal: the matmuls did run in bfloat16.
    flat, bf16_flat = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(t)]) for t in (grads, bf16_grads))
    cosine = jnp.dot(flat, bf16_flat) / (jnp.linalg.norm(flat) * jnp.linalg.norm(bf16_flat))
    assert 0.99 < cosine < 1.0 - 1e-7


def _program(num_layers: int, scan: bool):
    """The jitted loss-and-gradient of a small GPT-2-style model, lowered (not compiled)."""
    config = DecoderConfig(vocab_size=64, d_model=32, num_layers=num_layers, num_heads=2,
                           max_seq_len=16, scan_layers=scan)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0))), nnx.Param)

    def loss(params, tok):
        return nnx.merge(graphdef, params)(tok).logits.mean()

    return jax.jit(jax.value_and_grad(loss)).lower(params, jax.ShapeDtypeStruct((2, 16), jnp.int32))


def _instructions(hlo_text: str) -> int:
    return sum(" = " in line for line in hlo_text.splitlines())


def test_scan_compiles_one_layer_body_whatever_the_depth():
    """Counted, not timed: the matmuls in the program handed to XLA, and the instructions XLA
    compiles. Unrolled, each layer adds its forward and backward matmuls; scanned, the program
    holds exactly one layer body at any depth, and the compiled program is the same size at 4 and
    32 layers, so compile work does not grow with depth."""
    programs = {(n, scan): _program(n, scan) for n, scan in [(4, True), (32, True), (4, False), (16, False)]}
    dots = {key: lowered.as_text().count("stablehlo.dot_general") for key, lowered in programs.items()}
    per_layer = (dots[16, False] - dots[4, False]) // 12
    outside_layers = dots[4, False] - 4 * per_layer  # embedding and head
    assert per_layer > 0 and dots[16, False] == outside_layers + 16 * per_layer
    assert dots[4, True] == dots[32, True] == outside_layers + per_layer
    # XLA does not unroll the scan either: the compiled programs are the same size.
    compiled = {n: _instructions(programs[n, True].compile().as_text()) for n in (4, 32)}
    assert compiled[4] == compiled[32]
