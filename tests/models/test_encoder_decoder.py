"""The encoder-decoder family against references written in the test: decoding step by step through
the self- and cross-attention caches equals the teacher-forced forward (also with each stack's own
heads and width); packed pairs equal the same pairs alone; padding changes nothing; greedy
generation equals an argmax loop that reruns the whole model; parameter counts equal HF's
published figures."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer import count_params, load_model_config
from jaxformer.generate import generate
from jaxformer.models import EncoderDecoder, EncoderDecoderConfig
from jaxformer.nn import kv_cache

SMALL = dict(vocab_size=41, d_model=24, encoder_layers=2, decoder_layers=3, num_heads=3,
             head_dim=5, mlp_dim=28, max_seq_len=32, vocab_pad_multiple=16)
VARIANTS = {
    "t5-v1.0": dict(init="t5", attention_scale=False, relative_buckets=8,
                    relative_max_distance=12),
    "t5-v1.1": dict(activation="geglu_tanh", tie_embeddings=False, scale_decoder_output=False,
                    attention_scale=False, relative_buckets=8, relative_max_distance=12),
    "bart": dict(position="learned", position_offset=2, norm="layernorm", norm_eps=1e-5,
                 norm_position="post", embedding_norm=True, activation="gelu", use_bias=True,
                 scale_decoder_output=False, final_logits_bias=True, decoder_start_token_id=2),
    "vaswani-2017": dict(position="sinusoidal", norm="layernorm", norm_position="post",
                         use_bias=True, scale_embedding=True, scale_decoder_output=False),
    "t5-scanned": dict(scan_layers=True, relative_buckets=8, relative_max_distance=12),
    "t5-per-stack": dict(init="t5", attention_scale=False, relative_buckets=8,
                         relative_max_distance=12, encoder_num_heads=2, decoder_num_heads=4,
                         encoder_mlp_dim=20, decoder_mlp_dim=36),
}


def make_model(variant: str, seed: int = 0) -> EncoderDecoder:
    model = EncoderDecoder(EncoderDecoderConfig(**SMALL, **VARIANTS[variant]), rngs=nnx.Rngs(seed))
    # Norm scales and biases start at constants; randomise them so a misplaced one shows.
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(seed + 1), 1000))
    randomised = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(next(keys), p.shape), state)
    nnx.update(model, randomised)
    return model


@functools.cache
def model_and_call(variant: str):
    """The variant's model and its jitted forward, shared by the tests (one compile per shape)."""
    model = make_model(variant)
    return model, jitted(model)


def jitted(model, method: str = "__call__"):
    graphdef, state = nnx.split(model)

    @jax.jit
    def call(state, *args, **kwargs):
        return getattr(nnx.merge(graphdef, state), method)(*args, **kwargs)

    return lambda *args, **kwargs: call(state, *args, **kwargs)


SOURCE = np.array([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 0, 0, 0, 0]], np.int32)
SOURCE_SEG = (np.arange(7)[None] < np.array([[7], [3]])).astype(np.int32)
DECODER_IN = np.array([[0, 21, 22, 23, 24, 25], [0, 26, 27, 28, 29, 30]], np.int32)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_decoding_equals_teacher_forcing(variant):
    model, call = model_and_call(variant)
    full = call(SOURCE, DECODER_IN, SOURCE_SEG)
    memory, full = full.encoder_last_hidden_state, np.asarray(full.logits)
    decode = jitted(model, "decode")
    cache = model.init_cache(2, 8, memory_len=7)
    # Prefill two tokens at once (filling the cross-attention cache), then one at a time.
    out = decode(DECODER_IN[:, :2], memory, SOURCE_SEG,
                 decoder_positions=np.broadcast_to(np.arange(2), (2, 2)), cache=cache)
    steps, cache = [out.logits], out.cache
    for t in range(2, DECODER_IN.shape[1]):
        out = decode(DECODER_IN[:, t:t + 1], decoder_positions=np.full((2, 1), t), cache=cache)
        steps.append(out.logits)
        cache = out.cache
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("variant", ["t5-v1.0", "bart"])
def test_padding_changes_nothing(variant):
    _, call = model_and_call(variant)
    alone = np.asarray(call(SOURCE[1:, :3], DECODER_IN[1:]).logits)
    padded = np.asarray(call(SOURCE, DECODER_IN, SOURCE_SEG).logits)[1:]
    np.testing.assert_allclose(padded, alone, atol=2e-5, rtol=0)


@pytest.mark.parametrize("variant", ["t5-v1.0", "vaswani-2017"])
def test_packed_pairs_equal_separate_pairs(variant):
    """Two pairs in one row: sources and targets numbered 1 and 2, positions restarting."""
    _, call = model_and_call(variant)
    src_a, src_b = np.array([5, 6, 7, 8]), np.array([9, 10, 11])
    dec_a, dec_b = np.array([0, 20, 21]), np.array([0, 22, 23, 24])
    tokens = np.concatenate([src_a, src_b, [0]])[None]
    segments = np.array([[1, 1, 1, 1, 2, 2, 2, 0]])
    positions = np.array([[0, 1, 2, 3, 0, 1, 2, 0]])
    decoder = np.concatenate([dec_a, dec_b, [0]])[None]
    decoder_segments = np.array([[1, 1, 1, 2, 2, 2, 2, 0]])
    decoder_positions = np.array([[0, 1, 2, 0, 1, 2, 3, 0]])
    packed = np.asarray(call(tokens, decoder, segments, decoder_segments, positions=positions,
                             decoder_positions=decoder_positions).logits)[0]
    first = np.asarray(call(src_a[None], dec_a[None]).logits)[0]
    second = np.asarray(call(src_b[None], dec_b[None]).logits)[0]
    np.testing.assert_allclose(packed[:3], first, atol=2e-5, rtol=0)
    np.testing.assert_allclose(packed[3:7], second, atol=2e-5, rtol=0)


@pytest.mark.parametrize("variant", ["t5-v1.1", "bart"])
def test_greedy_generation_equals_argmax_loop(variant):
    """The compiled loop (encode once, cross-attention cached) against rerunning the whole
    model on the growing target at every step, no cache at all."""
    model, call = model_and_call(variant)
    sources = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    # The growing targets sit in a fixed [2, 6] block (one compile): the decoder is causal, so
    # what follows position t cannot change its logits.
    decoder = np.zeros((2, 6), np.int32)
    decoder[:, 0] = model.config.decoder_start_token_id
    for t in range(6):
        logits = np.asarray(call(SOURCE, decoder, SOURCE_SEG).logits)
        if t + 1 < 6:
            decoder[:, t + 1] = np.argmax(logits[:, t], axis=-1)
    expected = np.concatenate([decoder[:, 1:], np.argmax(logits[:, 5:], axis=-1)], axis=1)
    assert generate(model, sources, 6, temperature=0.0) == expected.tolist()


def test_beam_cache_reorder_keeps_memory():
    """Reordering only the KVCache leaves each row's cross-attention memory in place."""
    model, _ = model_and_call("bart")
    cache = model.init_cache(3, 4, memory_len=2)
    cache = jax.tree.map(lambda x: x + jnp.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
                         .astype(x.dtype), cache)
    moved = kv_cache.reorder(cache, jnp.array([2, 0, 0]), types=(kv_cache.KVCache,))
    for before, after in zip(cache, moved):
        np.testing.assert_array_equal(after["attention"].k[:, 0, 0, 0], [2, 0, 0])
        np.testing.assert_array_equal(after["cross_attention"].k, before["cross_attention"].k)


def test_each_stack_has_its_own_heads_and_width():
    """Attention (the decoder's cross-attention too), relative bias table and feed-forward have
    their stack's sizes, and so do the decoding cache, the counts and `jaxformer info`'s rows."""
    from jaxformer.compile.plan import mesh_candidates
    from jaxformer.models import get_family

    model, _ = model_and_call("t5-per-stack")
    c = model.config
    for stack, heads, mlp in ((model.encoder, 2, 20), (model.decoder, 4, 36)):
        assert stack.relative_bias.embedding[...].shape == (8, heads)
        for layer in stack.layers:
            attentions = [getattr(layer, name) for name in layer.sublayer_names
                          if name.endswith("attention")]
            assert [a.query.kernel[...].shape for a in attentions] == (
                [(24, heads, 5)] * (1 + (stack is model.decoder)))
            assert layer.feed_forward.up.kernel[...].shape == (24, mlp)
    layer_cache = model.init_cache(2, 8, memory_len=7)[0]
    assert layer_cache["attention"].k.shape == layer_cache["cross_attention"].k.shape[:2] + (8, 5)
    assert layer_cache["attention"].k.shape[1] == 4
    family = get_family("encoder_decoder")
    parts = family.param_counts(c).groups
    assert parts["encoder_feed_forward"] == 2 * 2 * 24 * 20
    assert parts["decoder_feed_forward"] == 3 * 2 * 24 * 36
    assert parts["decoder_cross_attention"] == 3 * 4 * 24 * 4 * 5
    flops = family.flops_parts(c, 10)
    assert flops["6 x (enc + 2 dec layers) x d x T (attention)"] == 6 * (2 * 10 + 2 * 3 * 20) * 10
    rows = {row[0]: row[1:3] for row in family.sizes(c)}
    assert rows["He"] == ("encoder_num_heads", 2) and rows["Id"] == ("decoder_mlp_dim", 36)
    # A tensor-parallel split must divide both stacks' heads: 2, not 4.
    assert {m.get("tensor") for m in mesh_candidates(8, c, 8)} == {None, 2}


def test_per_stack_sizes_are_checked():
    with pytest.raises(ValueError, match="model.decoder_num_heads=5: set model.head_dim"):
        EncoderDecoderConfig(d_model=24, num_heads=4, decoder_num_heads=5)
    with pytest.raises(ValueError, match="model.encoder_mlp_dim must be positive"):
        EncoderDecoderConfig(encoder_mlp_dim=0)
    assert EncoderDecoderConfig(d_model=24, num_heads=4, decoder_num_heads=5,
                                head_dim=6).stack_head_size("decoder") == 6


def test_every_parameter_has_logical_axes():
    model, _ = model_and_call("t5-v1.0")
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param),
                                                        is_leaf=lambda x: isinstance(x, nnx.Variable)):
        axes = leaf.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == leaf.get_value().ndim, path


def test_dropout_is_keyed():
    config = EncoderDecoderConfig(**SMALL, **{**VARIANTS["vaswani-2017"], "dropout": 0.3})
    model = EncoderDecoder(config, rngs=nnx.Rngs(0))
    call = jitted(model)
    a = np.asarray(call(SOURCE, DECODER_IN, SOURCE_SEG, dropout_rng=jax.random.key(1)).logits)
    b = np.asarray(call(SOURCE, DECODER_IN, SOURCE_SEG, dropout_rng=jax.random.key(1)).logits)
    c = np.asarray(call(SOURCE, DECODER_IN, SOURCE_SEG, dropout_rng=jax.random.key(2)).logits)
    d = np.asarray(call(SOURCE, DECODER_IN, SOURCE_SEG).logits)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


@pytest.mark.parametrize("preset,count", [
    ("t5-small", 60_506_624), ("t5-base", 222_903_552), ("t5-v1_1-small", 76_961_152),
    ("bart-base", 139_420_416)])
def test_parameter_counts_equal_hf(preset, count):
    assert count_params(load_model_config(preset)) == count


@pytest.mark.parametrize("preset,published", [("transformer-base", 65e6), ("transformer-big", 213e6)])
def test_transformer_2017_sizes(preset, published):
    """Vaswani et al. 2017, table 3, give the sizes to two digits (their vocabulary: 37,000
    shared BPE tokens)."""
    assert abs(count_params(load_model_config(preset)) - published) / published < 0.05
