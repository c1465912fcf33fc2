"""Generation past the context: chunks conditioned on the last half-context of tokens."""

import pytest
from flax import nnx

import jaxformer
from jaxformer.errors import UserError
from jaxformer.generate import generate, generate_past_context


@pytest.fixture(scope="module")
def model():
    config = jaxformer.load_model_config("tiny-gpt2", max_seq_len=16)
    return jaxformer.DecoderLM(config, rngs=nnx.Rngs(3))


def test_within_the_context_it_is_plain_generate(model):
    prompt = [5, 9, 2]
    assert generate_past_context(model, prompt, 10, temperature=0.0) == \
        generate(model, [prompt], 10, temperature=0.0)[0]


def test_past_the_context_each_chunk_continues_the_last_half_context(model):
    prompt = [5, 9, 2]
    new = generate_past_context(model, prompt, 40, temperature=0.0)
    assert len(new) == 40
    with pytest.raises(UserError, match="context"):
        generate(model, [prompt], 40, temperature=0.0)
    # Greedy reference, chunk by chunk: fill the context, then keep the last 8 (= 16 // 2) tokens.
    tokens, expected = list(prompt), []
    while len(expected) < 40:
        count = min(16 - len(tokens), 40 - len(expected))
        out = generate(model, [tokens], count, temperature=0.0)[0]
        expected += out
        tokens = (tokens + out)[-8:]
    assert new == expected
    assert new[:13] == generate(model, [prompt], 13, temperature=0.0)[0]


def test_a_stop_token_ends_it(model):
    prompt = [5, 9, 2]
    free = generate_past_context(model, prompt, 40, temperature=0.0)
    stop = free[20]
    first = free.index(stop)
    assert generate_past_context(model, prompt, 40, temperature=0.0, stop_tokens=[stop]) == \
        free[:first + 1]
