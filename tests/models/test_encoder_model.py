"""The encoder family against references written here: a naive numpy forward pass (post- and
pre-norm), packed rows against the same sequences alone, the masked-LM head at chosen positions
against the full logits, scanned layers against unrolled, and the presets' parameter counts
against HF's published figures."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer import count_params, load_model_config
from jaxformer.errors import ConfigError
from jaxformer.models import build_model
from jaxformer.models.encoder_config import EncoderConfig
from jaxformer.models.layers import stack_layers

SMALL = dict(vocab_size=53, d_model=24, num_layers=2, num_heads=3, mlp_dim=40, max_seq_len=32,
             type_vocab_size=3, dropout=0.0, norm_eps=1e-6)


def model_for(**overrides):
    config = EncoderConfig(**{**SMALL, **overrides})
    model = build_model(config, rngs=nnx.Rngs(0))
    # Random norms and biases too, so that a misplaced one shows.
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.PRNGKey(1), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda p: p + 0.1 * jax.random.normal(next(keys), p.shape), state))
    return config, model


def params(model) -> dict[str, np.ndarray]:
    return {"/".join(map(str, path)): np.asarray(v.get_value(), np.float64)
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def naive_encoder(p, config, tokens, token_types, mask):
    """One row at a time, written from the formulas: returns last hidden states [batch, T, D]."""
    c, eps = config, config.norm_eps
    ln = lambda x, name: layer_norm(x, p[f"{name}/scale"], p[f"{name}/bias"], eps)
    outputs = []
    for row in range(tokens.shape[0]):
        t = len(tokens[row])
        x = (p["embeddings/word/embedding"][tokens[row]]
             + p["embeddings/token_type/embedding"][token_types[row]]
             + p["embeddings/position/embedding"][np.arange(t)])
        x = ln(x, "embeddings/norm")
        for i in range(c.num_layers):
            pre = f"layers/{i}/"

            def attention(h):
                heads = []
                for head in range(c.num_heads):
                    proj = lambda name: (h @ p[f"{pre}attention/{name}/kernel"][:, head]
                                         + p[f"{pre}attention/{name}/bias"][head])
                    q, k, v = proj("query"), proj("key"), proj("value")
                    scores = q @ k.T / math.sqrt(c.head_size)
                    scores = np.where(mask[row][None, :] > 0, scores, -1e30)
                    w = np.exp(scores - scores.max(-1, keepdims=True))
                    heads.append((w / w.sum(-1, keepdims=True)) @ v)
                out = np.stack(heads, 1)  # [t, heads, head_dim]
                return np.einsum("thd,hde->te", out, p[f"{pre}attention/out/kernel"]) \
                    + p[f"{pre}attention/out/bias"]

            def feed_forward(h):
                up = gelu(h @ p[f"{pre}feed_forward/up/kernel"] + p[f"{pre}feed_forward/up/bias"])
                return up @ p[f"{pre}feed_forward/down/kernel"] + p[f"{pre}feed_forward/down/bias"]

            for name, f in (("attention", attention), ("feed_forward", feed_forward)):
                if c.norm_position == "post":
                    x = ln(x + f(x), f"{pre}{name}_norm")
                else:
                    x = x + f(ln(x, f"{pre}{name}_norm"))
        if c.norm_position == "pre":
            x = ln(x, "final_norm")
        outputs.append(x)
    return np.stack(outputs)


def inputs(batch=3, time=11, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, SMALL["vocab_size"], (batch, time))
    token_types = rng.integers(0, SMALL["type_vocab_size"], (batch, time))
    mask = np.ones((batch, time), np.int32)
    mask[-1, 7:] = 0
    return tokens, token_types, mask


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_forward_matches_naive_reference(norm_position):
    config, model = model_for(norm_position=norm_position, head="none")
    tokens, token_types, mask = inputs()
    out = model(jnp.asarray(tokens), token_types=jnp.asarray(token_types),
                segment_ids=jnp.asarray(mask))
    expected = naive_encoder(params(model), config, tokens, token_types, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state)[real], expected[real], atol=2e-5)
    p = params(model)
    pooled = np.tanh(expected[:, 0] @ p["pooler/dense/kernel"] + p["pooler/dense/bias"])
    np.testing.assert_allclose(np.asarray(out.pooler_output), pooled, atol=2e-5)


def test_packed_row_equals_sequences_alone():
    """Two sequences in one row (segment ids 1 and 2, padding 0): each token's hidden state equals
    the same sequence's run alone; positions restart at 0 in each."""
    _, model = model_for(head="masked_lm")
    tokens, token_types, _ = inputs(batch=2, time=8, seed=3)
    packed = np.concatenate([tokens[0, :5], tokens[1, :6], [0, 0]])[None]
    packed_types = np.concatenate([token_types[0, :5], token_types[1, :6], [0, 0]])[None]
    segments = np.asarray([[1] * 5 + [2] * 6 + [0, 0]])
    out = model(jnp.asarray(packed), token_types=jnp.asarray(packed_types),
                segment_ids=jnp.asarray(segments))
    for row, (start, length) in enumerate(((0, 5), (5, 6))):
        alone = model(jnp.asarray(tokens[row:row + 1, :length]),
                      token_types=jnp.asarray(token_types[row:row + 1, :length]))
        np.testing.assert_allclose(np.asarray(out.logits)[0, start:start + length],
                                   np.asarray(alone.logits)[0], atol=1e-4)


def test_masked_positions_pick_the_full_logits():
    _, model = model_for(head="pretraining")
    tokens, token_types, mask = inputs()
    args = dict(token_types=jnp.asarray(token_types), segment_ids=jnp.asarray(mask))
    full = np.asarray(model(jnp.asarray(tokens), **args).logits)
    positions = np.asarray([[1, 4, 9], [0, 2, 3], [6, 5, 0]])
    picked = model(jnp.asarray(tokens), masked_positions=jnp.asarray(positions), **args)
    assert picked.logits.shape == (3, 3, SMALL["vocab_size"])
    np.testing.assert_allclose(np.asarray(picked.logits),
                               np.take_along_axis(full, positions[..., None], 1), atol=1e-5)
    assert picked.seq_relationship_logits.shape == (3, 2)


def test_scanned_layers_equal_unrolled():
    config, model = model_for(head="classification", num_labels=4)
    scanned = build_model(config.replace(scan_layers=True), rngs=nnx.Rngs(5))
    nnx.update(scanned, stack_layers(nnx.state(model)))
    tokens, token_types, mask = inputs()
    args = dict(token_types=jnp.asarray(token_types), segment_ids=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(scanned(jnp.asarray(tokens), **args).logits),
                               np.asarray(model(jnp.asarray(tokens), **args).logits), atol=1e-5)


def test_dropout_only_with_a_key():
    _, model = model_for(head="token_classification", dropout=0.3)
    tokens, token_types, mask = inputs()
    run = lambda key: np.asarray(model(jnp.asarray(tokens), segment_ids=jnp.asarray(mask),
                                       dropout_rng=key).logits)
    np.testing.assert_array_equal(run(None), run(None))
    assert not np.allclose(run(jax.random.PRNGKey(0)), run(None))


@pytest.mark.parametrize("preset, head, expected", [
    ("bert-base", "none", 109_482_240),
    ("bert-base", "pretraining", 110_106_428),
    ("bert-base", "masked_lm", 109_514_298),
    ("bert-large", "none", 335_141_888),
    ("bert-large", "pretraining", 336_226_108),
])
def test_preset_counts_equal_hf(preset, head, expected):
    assert count_params(load_model_config(preset, head=head)) == expected


def test_bad_head_names_the_field():
    with pytest.raises(ConfigError, match="model.head='mlm' is not one of"):
        load_model_config("bert-base", head="mlm")
