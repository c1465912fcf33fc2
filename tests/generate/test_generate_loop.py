"""The compiled decoding loop against a naive loop that reruns the whole forward pass per token."""

from functools import partial

import jax
import numpy as np
import pytest
from flax import nnx

import jaxformer
from jaxformer.generate import decode, generate, make_settings

# A larger init than the default makes random tiny models produce varied text, so that the
# comparisons below are between non-trivial sequences.
MODELS = {name: jaxformer.DecoderLM(jaxformer.load_model_config(name, init_std=0.3),
                                    rngs=nnx.Rngs(0))
          for name in ("tiny-gpt2", "tiny-llama")}
PROMPTS = [[5, 17, 99, 3, 42, 8, 200], [7], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                             23, 24, 25, 26, 27, 28, 29]]


def full_forward(model, sequence):
    """Logits [len, vocab] of one sequence from a full causal pass with no cache. The sequence is
    padded at the end to a fixed 64 tokens so one compiled program serves every length: causal
    attention keeps the real tokens' logits independent of what follows them."""
    graphdef, state = nnx.split(model)
    padded = np.zeros((1, 64), np.int32)
    padded[0, :len(sequence)] = sequence
    return np.asarray(_forward(graphdef, state, padded)[0, :len(sequence)])


@partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens):
    return nnx.merge(graphdef, state)(tokens).logits


def naive_greedy(model, prompt, n):
    """Rerun the full forward pass over the whole sequence each step; argmax of the last logits."""
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(np.argmax(full_forward(model, tokens)[-1])))
    return tokens[len(prompt):]


@pytest.mark.parametrize("name", MODELS)
def test_greedy_equals_naive_loop_and_mixed_lengths_equal_alone(name):
    model = MODELS[name]
    n = 12
    batched = generate(model, PROMPTS, n, temperature=0.0)
    assert len({t for row in batched for t in row}) > 6, "degenerate outputs: pick another init"
    # The naive reference runs each prompt alone, so this is also "mixed lengths equal alone".
    for prompt, got in zip(PROMPTS, batched):
        assert got == naive_greedy(model, prompt, n)


@pytest.mark.parametrize("name", MODELS)
def test_cache_logits_equal_full_forward_logits_at_every_step(name):
    model = MODELS[name]
    n = 10
    settings = make_settings(n, temperature=1.0, top_k=20, return_logits=True)
    out = decode(model, PROMPTS, settings, seed=3)
    for i, prompt in enumerate(PROMPTS):
        sequence = prompt + out.tokens[i].tolist()
        full = full_forward(model, sequence)
        # Logits that chose new token t are the full pass's logits at position len + t - 1.
        expected = full[len(prompt) - 1:len(prompt) - 1 + n]
        np.testing.assert_allclose(out.logits[i], expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", [dict(attention_impl="einsum"), dict(scan_layers=True)])
def test_other_model_layouts_decode_the_same(variant):
    """The einsum attention (which sows its weights inside the scan) and layers stacked for
    `scan_layers` give the greedy tokens of the naive loop too."""
    config = jaxformer.load_model_config("tiny-gpt2", init_std=0.3, **variant)
    model = jaxformer.DecoderLM(config, rngs=nnx.Rngs(0))
    got = generate(model, PROMPTS[:2], 8, temperature=0.0)
    for prompt, row in zip(PROMPTS[:2], got):
        assert row == naive_greedy(model, prompt, 8)
