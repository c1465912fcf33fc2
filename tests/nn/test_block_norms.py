"""Where the norms sit: pre- and post-norm blocks, and the final norm, against a naive reference
written here from the formulas

    pre-norm  (GPT-2, Llama):       h = x + attention(norm_1(x));  out = h + feed_forward(norm_2(h))
    post-norm (2017, BERT):         h = norm_1(x + attention(x));  out = norm_2(h + feed_forward(h))
    final norm: pre-norm stacks apply one more norm before the LM head; post-norm stacks do not.

for LayerNorm with and without bias and RMSNorm. The norms in the reference are numpy code; the
attention and feed-forward sublayers are the block's own (tested against their own references in
test_attention.py and test_norms_ffn.py): what is under test is only where each norm and residual
sits. Every norm gets its own random scale (and bias), so two norms swapped, a norm left out or
applied twice, or a norm moved inside or outside a residual changes the output.

Mutations tried (then reverted): moving the feed-forward norm inside the residual in the
post-norm block (`x = x + ffn_norm(ffn(x))`) and in the pre-norm block (`x + ffn_norm(ffn(x))`)
each fails the block test for every norm kind; dropping the final norm fails the final-norm test.

The reference helpers (`naive_*`, `block_parts`, `decoder_parts`) are the only places that know
the block's attribute names, so a change of the block API touches only them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models import DecoderConfig, DecoderLM
from jaxformer.nn.attention import Attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.norms import LayerNorm, RMSNorm, make_norm

D, HEADS, EPS = 32, 4, 1e-2  # a large eps, so that where it goes is visible too
NORMS = [("layernorm", True), ("layernorm", False), ("rmsnorm", False)]


# --- the naive reference --------------------------------------------------------------------------

def naive_layernorm(x, scale, bias, eps):
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps) * scale
    return out + bias if bias is not None else out


def naive_rmsnorm(x, scale, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


def naive_norm(norm):
    """The numpy function of a norm module, from its parameters."""
    scale = np.asarray(norm.scale[...], np.float64)
    if isinstance(norm, RMSNorm):
        return lambda x: naive_rmsnorm(x, scale, norm.eps)
    bias = None if norm.bias is None else np.asarray(norm.bias[...], np.float64)
    return lambda x: naive_layernorm(x, scale, bias, norm.eps)


def naive_pre_norm_block(x, attention, feed_forward, norm_1, norm_2):
    h = x + attention(norm_1(x))
    return h + feed_forward(norm_2(h))


def naive_post_norm_block(x, attention, feed_forward, norm_1, norm_2):
    h = norm_1(x + attention(x))
    return norm_2(h + feed_forward(h))


def block_parts(block, positions):
    """(attention, feed-forward, attention norm, feed-forward norm) of a block as numpy functions."""
    as_f32 = lambda x: jnp.asarray(x, jnp.float32)
    attention = lambda x: np.asarray(block.attention(as_f32(x), positions)[0], np.float64)
    feed_forward = lambda x: np.asarray(block.feed_forward(as_f32(x)), np.float64)
    return attention, feed_forward, naive_norm(block.attention_norm), naive_norm(block.feed_forward_norm)


def decoder_parts(model):
    """(token table, position table or None, layers, final norm or None, LM head matrix [D, V])."""
    table = np.asarray(model.embed.embedding[...], np.float64)
    positions = (None if model.position_embedding is None
                 else np.asarray(model.position_embedding.embedding[...], np.float64))
    head = table.T if model.lm_head is None else np.asarray(model.lm_head.kernel[...], np.float64)
    final = None if model.final_norm is None else naive_norm(model.final_norm)
    return table, positions, list(model.layers), final, head


# --- helpers --------------------------------------------------------------------------------------

def randomize_norms(module, seed: int) -> None:
    """Give every norm in `module` its own random scale (around 1) and bias."""
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, (LayerNorm, RMSNorm)):
            node.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, node.scale.shape), jnp.float32)
            if getattr(node, "bias", None) is not None:
                node.bias[...] = jnp.asarray(rng.normal(0, 0.5, node.bias.shape), jnp.float32)


def make_block(norm: str, use_bias: bool, position: str) -> TransformerBlock:
    rngs = nnx.Rngs(0)
    # A larger init than GPT-2's 0.02, so the sublayers' outputs are not negligible beside x.
    init = nnx.initializers.normal(0.3)
    attention = Attention(D, HEADS, use_bias=use_bias, causal=True, init=init, rngs=rngs)
    feed_forward = FeedForward(D, 4 * D, activation="gelu", use_bias=use_bias, init=init, rngs=rngs)
    norms = [make_norm(norm, D, eps=EPS, use_bias=use_bias, rngs=rngs) for _ in range(2)]
    block = TransformerBlock({"attention": (attention, norms[0]), "feed_forward": (feed_forward, norms[1])},
                             norm_position=position)
    randomize_norms(block, seed=1)
    return block


@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize("norm, use_bias", NORMS)
def test_block_matches_the_formula(norm, use_bias, position):
    block = make_block(norm, use_bias, position)
    x = jax.random.normal(jax.random.key(2), (2, 8, D)) * 2.0 + 0.5  # not already normalised
    positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
    reference = (naive_pre_norm_block if position == "pre" else naive_post_norm_block)(
        np.asarray(x, np.float64), *block_parts(block, positions))
    out, _, _ = block(x, BlockContext(positions=positions))
    np.testing.assert_allclose(np.asarray(out), reference, rtol=1e-4, atol=1e-4)
    # The reference is not trivially close to the other placement: it tells them apart.
    other = (naive_post_norm_block if position == "pre" else naive_pre_norm_block)(
        np.asarray(x, np.float64), *block_parts(block, positions))
    assert np.abs(other - reference).max() > 0.1


@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize("norm, use_bias", NORMS)
def test_final_norm_only_for_pre_norm_stacks(norm, use_bias, position):
    config = DecoderConfig(vocab_size=50, d_model=D, num_layers=2, num_heads=HEADS, max_seq_len=16,
                           norm=norm, norm_eps=EPS, use_bias=use_bias, norm_position=position,
                           tie_embeddings=norm == "layernorm", init_std=0.3)
    model = DecoderLM(config, rngs=nnx.Rngs(0))
    randomize_norms(model, seed=3)
    tokens = jax.random.randint(jax.random.key(4), (2, 8), 0, 50)
    positions = jnp.broadcast_to(jnp.arange(8), (2, 8))

    table, position_table, layers, final, head = decoder_parts(model)
    assert (final is not None) == (position == "pre")
    x = table[np.asarray(tokens)] + position_table[np.asarray(positions)]
    for layer in layers:  # each block is checked against the formula above
        x = np.asarray(layer(jnp.asarray(x, jnp.float32), BlockContext(positions=positions))[0],
                       np.float64)
    if position == "pre":
        x = final(x)
    logits = model(tokens).logits
    # The table is padded to a multiple of 128 rows; the logits cover the real vocabulary only.
    np.testing.assert_allclose(np.asarray(logits), x @ head[:, :config.vocab_size], rtol=1e-4,
                               atol=1e-4)
