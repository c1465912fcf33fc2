"""The decoder LM's contracts: causality, packing, padding and the KV cache each reproduce a plain
forward pass; dropout is keyed; every parameter carries logical axis names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxformer
from jaxformer import DecoderLM

VARIANTS = {
    "gpt2": ("tiny-gpt2", {}),
    "llama": ("tiny-llama", {}),
    "alibi": ("tiny-gpt2", {"position": "alibi"}),
    "sinusoidal": ("tiny-gpt2", {"position": "sinusoidal"}),
    "post_norm": ("tiny-gpt2", {"norm_position": "post"}),
    "mqa": ("tiny-llama", {"num_kv_heads": 1}),
    "sliding_window": ("tiny-llama", {"sliding_window": 4}),
    "scan": ("tiny-llama", {"scan_layers": True, "remat": "full"}),
}
TOL = dict(rtol=1e-5, atol=1e-5)


class Compiled:
    """A model as a pure function of its split state, compiled once per input shape."""

    def __init__(self, model):
        self.model = model
        self.graphdef, self.state = nnx.split(model)

        def forward(state, tokens, positions, segment_ids, cache, dropout_rng):
            return nnx.merge(self.graphdef, state)(tokens, positions, segment_ids, cache,
                                                   dropout_rng=dropout_rng)

        self._forward = jax.jit(forward)

    def __call__(self, tokens, positions=None, segment_ids=None, cache=None, dropout_rng=None):
        as_array = lambda a: None if a is None else jnp.asarray(a, jnp.int32)
        out = self._forward(self.state, as_array(tokens), as_array(positions),
                            as_array(segment_ids), cache, dropout_rng)
        return np.asarray(out.logits), out.cache


_MODELS = {}


def compiled(variant, **extra):
    key = (variant, tuple(sorted(extra.items())))
    if key not in _MODELS:
        name, overrides = VARIANTS[variant]
        config = jaxformer.load_model_config(name, **overrides, **extra)
        _MODELS[key] = Compiled(DecoderLM(config, rngs=nnx.Rngs(0)))
    return _MODELS[key]


def random_tokens(seed, shape, vocab=256):
    return np.random.default_rng(seed).integers(1, vocab, shape).astype(np.int32)


# Most checks run at one shape, [2, T] with explicit positions and segment ids, so each variant
# compiles only three times (full forward, prefill, one-token step).
T = 16


def full_row(tokens):
    """Explicit positions 0..n-1 and segment 1 for unpadded rows [batch, n]."""
    batch, n = tokens.shape
    return np.broadcast_to(np.arange(n), (batch, n)), np.ones((batch, n), np.int32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal(variant):
    model = compiled(variant)
    tokens = random_tokens(0, (2, T))
    logits, _ = model(tokens, *full_row(tokens))
    assert logits.shape == (2, T, 256) and logits.dtype == np.float32
    for t in (0, 5, T - 1):
        changed = tokens.copy()
        changed[:, t] = changed[:, t] % 255 + 1
        other, _ = model(changed, *full_row(tokens))
        np.testing.assert_allclose(other[:, :t], logits[:, :t], **TOL)
        assert np.abs(other[:, t] - logits[:, t]).max() > 1e-4  # the change is seen where it is made


def test_default_positions_and_segments():
    model = compiled("gpt2")
    tokens = random_tokens(1, (2, T))
    np.testing.assert_array_equal(model(tokens)[0], model(tokens, *full_row(tokens))[0])


def pad_to(row, length):
    """One document [n] as a right-padded row: tokens, positions, segment ids, each [length]."""
    n = len(row)
    filler = random_tokens(99, (length - n,))  # junk, not zeros: padding must be masked, not benign
    return (np.concatenate([row, filler]), np.concatenate([np.arange(n), np.zeros(length - n, int)]),
            np.concatenate([np.ones(n, int), np.zeros(length - n, int)]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_packed_documents_equal_separate_ones(variant):
    model = compiled(variant)
    lengths = [5, 3, 6]  # + 2 padding = T
    docs = [random_tokens(10 + i, (n,)) for i, n in enumerate(lengths)]
    tokens = np.concatenate(docs + [random_tokens(13, (T - sum(lengths),))])
    segment_ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)]
                                 + [np.zeros(T - sum(lengths), int)])
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(T - sum(lengths), int)])
    # row 1 packs the same documents in another order, starting with the last
    order = [2, 0, 1]
    tokens1 = np.concatenate([docs[i] for i in order] + [tokens[sum(lengths):]])
    positions1 = np.concatenate([np.arange(lengths[i]) for i in order] + [positions[sum(lengths):]])
    segment_ids1 = np.concatenate([np.full(lengths[i], 7 + i) for i in order] + [segment_ids[sum(lengths):]])
    packed, _ = model(np.stack([tokens, tokens1]), np.stack([positions, positions1]),
                      np.stack([segment_ids, segment_ids1]))
    assert np.isfinite(packed).all()

    # each document alone: first in its own row, padded (padding itself is checked below against
    # the unpadded row)
    rows = [pad_to(doc, T) for doc in docs] + [pad_to(docs[0], T)]
    alone = [model(*(np.stack(x) for x in zip(*rows[i:i + 2])))[0] for i in (0, 2)]
    alone = [alone[0][0], alone[0][1], alone[1][0]]
    start = 0
    offsets1 = {i: sum(lengths[j] for j in order[:order.index(i)]) for i in range(3)}
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(packed[0, start:start + n], alone[i][:n], **TOL)
        np.testing.assert_allclose(packed[1, offsets1[i]:offsets1[i] + n], alone[i][:n], **TOL)
        start += n


@pytest.mark.parametrize("variant", ["gpt2", "llama", "alibi", "sliding_window"])
def test_right_padding_changes_nothing(variant):
    model = compiled(variant)
    doc = random_tokens(20, (1, 7))
    alone, _ = model(doc, *full_row(doc))  # the unpadded row: its own shape
    rows = [pad_to(doc[0], T), pad_to(random_tokens(21, (T,)), T)]
    batch, _ = model(*(np.stack(x) for x in zip(*rows)))
    assert np.isfinite(batch).all()
    np.testing.assert_allclose(batch[0, :7], alone[0], **TOL)
    full, _ = model(rows[1][0][None], *full_row(rows[1][0][None]))
    np.testing.assert_allclose(batch[1], full[0], **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_reproduces_full_forward(variant):
    model = compiled(variant)
    batch, prompt = 2, 6
    tokens = random_tokens(30, (batch, T))
    positions, segment_ids = full_row(tokens)
    full, _ = model(tokens, positions, segment_ids)

    # one token at a time
    cache = model.model.init_cache(batch, T)
    layers = model.model.config.num_layers
    if isinstance(cache, list):  # one dict per layer, or (scan_layers) one stacked dict
        assert len(cache) == layers
    else:
        assert all(x.shape[0] == layers for x in jax.tree.leaves(cache))
    steps = []
    for t in range(T):
        logits, cache = model(tokens[:, t:t + 1], positions[:, t:t + 1], segment_ids[:, t:t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, **TOL)

    # prefill a prompt, then step
    cache = model.model.init_cache(batch, T)
    first, cache = model(tokens[:, :prompt], positions[:, :prompt], segment_ids[:, :prompt], cache)
    steps = [first]
    filled = (cache[0]["attention"].segment_ids if isinstance(cache, list)
              else cache["attention"].segment_ids[0])
    np.testing.assert_array_equal(np.asarray(filled), np.array([[1] * prompt + [0] * (T - prompt)] * batch))
    for t in range(prompt, T):
        logits, cache = model(tokens[:, t:t + 1], positions[:, t:t + 1], segment_ids[:, t:t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, **TOL)


def test_kv_cache_with_padded_prompts():
    """Prompts of different lengths, right-padded in one prefill: each row's next-token logits
    equal those of its prompt alone."""
    model = compiled("llama")
    prompt = random_tokens(40, (2, 6))
    positions = np.broadcast_to(np.arange(6), (2, 6))
    cache = model.model.init_cache(2, T)
    prefill, cache = model(prompt, positions, np.array([[1] * 6, [1] * 4 + [0] * 2]), cache)
    # row 1's next token goes at position 4, overwriting a padding slot; row 0's at 6
    nxt = random_tokens(41, (2, 1))
    step, cache = model(nxt, np.array([[6], [4]]), np.ones((2, 1)), cache)
    rows = [pad_to(np.concatenate([prompt[0], nxt[0]]), T),
            pad_to(np.concatenate([prompt[1, :4], nxt[1]]), T)]
    whole, _ = model(*(np.stack(x) for x in zip(*rows)))
    np.testing.assert_allclose(prefill[1, :4], whole[1, :4], **TOL)
    np.testing.assert_allclose(step[0, 0], whole[0, 6], **TOL)
    np.testing.assert_allclose(step[1, 0], whole[1, 4], **TOL)


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_dropout_is_keyed(variant):
    model = compiled(variant, dropout=0.2)
    tokens = random_tokens(50, (2, T))
    plain, _ = model(tokens)
    again, _ = model(tokens)
    np.testing.assert_array_equal(plain, again)
    a, _ = model(tokens, dropout_rng=jax.random.key(1))
    b, _ = model(tokens, dropout_rng=jax.random.key(1))
    c, _ = model(tokens, dropout_rng=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - plain).max() > 1e-3
    assert np.abs(a - c).max() > 1e-3
    # without a key, dropout is off: the same logits as the same weights with rate 0
    no_dropout = compiled(variant)
    np.testing.assert_array_equal(no_dropout(tokens)[0], plain)
    # and with rate 0 a key changes nothing
    np.testing.assert_array_equal(no_dropout(tokens, dropout_rng=jax.random.key(1))[0], plain)


LOGICAL_NAMES = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "position", "layers"}


@pytest.mark.parametrize("variant", ["gpt2", "llama", "post_norm", "mqa", "scan"])
def test_every_parameter_has_logical_axes(variant):
    name, overrides = VARIANTS[variant]
    model = DecoderLM(jaxformer.load_model_config(name, **overrides), rngs=nnx.Rngs(0))  # no mesh
    params = nnx.state(model, nnx.Param)
    specs = nnx.get_partition_spec(params)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(leaves) == len(spec_leaves) > 0
    for (path, value), spec in zip(leaves, spec_leaves):
        where = jax.tree_util.keystr(path)
        assert isinstance(spec, jax.sharding.PartitionSpec), where
        assert len(spec) == value.ndim, f"{where}: {spec} for shape {value.shape}"
        assert all(axis in LOGICAL_NAMES for axis in spec), f"{where}: {spec}"
        in_layer = where.startswith("['layers']")
        assert (spec[0] == "layers") == (in_layer and variant == "scan"), f"{where}: {spec}"
        # nothing was placed on a mesh: the names are metadata only
        assert len(value.sharding.device_set) == 1, where
