"""Decoding requests: seeds, stop tokens, context limits and the compile cache."""

import numpy as np
import pytest
from flax import nnx

import jaxformer
from jaxformer.errors import UserError
from jaxformer.generate import clear_compile_cache, decode, generate, make_settings, trace_count

# A larger init than the default makes random tiny models produce varied text.
MODELS = {name: jaxformer.DecoderLM(jaxformer.load_model_config(name, init_std=0.3),
                                    rngs=nnx.Rngs(0))
          for name in ("tiny-gpt2", "tiny-llama")}
PROMPTS = [[5, 17, 99, 3, 42, 8, 200], [7], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                             23, 24, 25, 26, 27, 28, 29]]


def test_same_seed_same_tokens_and_a_longer_request_extends_them():
    model = MODELS["tiny-gpt2"]
    kw = dict(temperature=0.9, top_p=0.95)
    a = generate(model, PROMPTS, 8, seed=5, **kw)
    assert a == generate(model, PROMPTS, 8, seed=5, **kw)
    assert a != generate(model, PROMPTS, 8, seed=6, **kw)
    longer = generate(model, PROMPTS, 12, seed=5, **kw)
    assert [row[:8] for row in longer] == a


def test_stop_tokens_end_a_row_and_it_stops_changing():
    model = MODELS["tiny-llama"]
    n = 12
    free = generate(model, PROMPTS, n, temperature=0.0)
    stop = free[0][4]  # a token row 0 produces at step 4 (maybe earlier too)
    first = free[0].index(stop)
    streamed = []
    out = decode(model, PROMPTS, make_settings(n, temperature=0.0, stop_tokens=[stop], pad_id=0,
                                               stream=True),
                 on_tokens=lambda step, toks, valid: streamed.append((step, toks.copy(), valid.copy())))
    assert out.tokens[0, :first + 1].tolist() == free[0][:first + 1]
    assert (out.tokens[0, first + 1:] == 0).all()
    assert out.num_tokens[0] == first + 1
    for i in (1, 2):  # rows that never produce the stop token are unaffected
        if stop not in free[i]:
            assert out.tokens[i].tolist() == free[i] and out.num_tokens[i] == n
    # The streamed tokens are the returned ones, step by step, and flag row 0 invalid after its stop.
    assert [s for s, _, _ in streamed] == list(range(n))
    np.testing.assert_array_equal(np.stack([t for _, t, _ in streamed], axis=1), out.tokens)
    assert [bool(v[0]) for _, _, v in streamed] == [t <= first for t in range(n)]
    # `generate` returns each row up to and including its stop token.
    assert generate(model, PROMPTS, n, temperature=0.0, stop_tokens=[stop])[0] == free[0][:first + 1]


def test_requests_past_the_context_are_user_errors():
    model = MODELS["tiny-gpt2"]  # max_seq_len 128
    with pytest.raises(UserError, match=r"100 tokens.*29 new.*129 > the model's context of 128"):
        generate(model, [[1] * 100], 29)
    assert len(generate(model, [[1] * 100], 28, temperature=0.0)[0]) == 28  # exactly fits
    with pytest.raises(UserError, match="prompt 1 is empty"):
        generate(model, [[1], []], 4)
    with pytest.raises(UserError, match="token id 300 outside the vocabulary"):
        generate(model, [[1, 300]], 4)
    with pytest.raises(UserError, match="top_p"):
        generate(model, [[1]], 4, top_p=1.5)


def test_prompt_lengths_in_one_bucket_share_one_compilation():
    model = MODELS["tiny-gpt2"]
    clear_compile_cache()
    before = trace_count()
    generate(model, [[1, 2, 3, 4, 5]], 6, temperature=0.0)
    generate(model, [[9] * 11], 6, temperature=0.0)  # same bucket (16): no new program
    generate(model, [[4] * 16], 6, temperature=0.0)
    assert trace_count() - before == 1
    generate(model, [[4] * 17], 6, temperature=0.0)  # next bucket (32)
    assert trace_count() - before == 2
    generate(model, [[4] * 17], 6, temperature=0.5)  # other sampling settings
    assert trace_count() - before == 3


def test_parameters_sharded_over_devices_give_the_same_tokens_and_stream():
    """Training samples from a model whose parameters live on a mesh (conftest: 8 CPU devices);
    streaming there uses unordered callbacks, put back in step order by the sink."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    model = MODELS["tiny-gpt2"]
    expected = generate(model, PROMPTS[:2], 6, temperature=0.0)
    mesh = jax.make_mesh((len(jax.devices()),), ("fsdp",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    graphdef, state = nnx.split(model)

    def place(x):
        split = x.ndim and x.shape[0] % mesh.size == 0
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec("fsdp" if split else None)))

    sharded = nnx.merge(graphdef, jax.tree.map(place, state))
    steps = []
    got = generate(sharded, PROMPTS[:2], 6, temperature=0.0,
                   on_tokens=lambda step, tokens, valid: steps.append((step, tokens.tolist())))
    assert got == expected
    assert steps == [(t, [row[t] for row in expected]) for t in range(6)]


def test_bucket_lengths_bound_the_padding():
    from jaxformer.generate import bucket_length

    buckets = {bucket_length(n, 1024) for n in range(1, 1025)}
    assert len(buckets) == 8  # 16 32 64 128 256 512 768 1024: few programs to compile
    for n in range(1, 1025):
        b = bucket_length(n, 1024)
        assert n <= b <= 1024
        assert b <= max(2 * n, 16) if n <= 256 else b - n < 256
    assert bucket_length(20, 24) == 24  # never past the context


SAMPLING = {"top_k": dict(temperature=0.9, top_k=8), "top_p": dict(temperature=1.2, top_p=0.85),
            "top_k_top_p": dict(temperature=1.0, top_k=20, top_p=0.9)}


@pytest.mark.parametrize("sampling", SAMPLING.values(), ids=SAMPLING.keys())
def test_each_row_with_its_seed_gets_what_its_prompt_gets_alone(sampling):
    model = MODELS["tiny-gpt2"]
    seeds = [11, 3, 7]  # three prompts of different lengths (7, 1 and 19 tokens)
    together = generate(model, PROMPTS, 10, seed=seeds, **sampling)
    alone = [generate(model, [prompt], 10, seed=[s], **sampling)[0]
             for prompt, s in zip(PROMPTS, seeds)]
    assert together == alone
    assert generate(model, PROMPTS, 10, seed=[12, 4, 8], **sampling) != together  # seeds matter
    # An int seed s gives row i the stream of seed s + i.
    assert generate(model, PROMPTS, 10, seed=3, **sampling) == [
        generate(model, [prompt], 10, seed=3 + i, **sampling)[0] for i, prompt in enumerate(PROMPTS)]


def test_an_int_seed_gives_identical_prompts_different_continuations():
    model = MODELS["tiny-llama"]
    rows = generate(model, [PROMPTS[0]] * 3, 12, temperature=1.0, seed=0)
    assert len({tuple(row) for row in rows}) == 3, rows
    with pytest.raises(UserError, match="one per prompt"):
        generate(model, [PROMPTS[0]] * 3, 4, seed=[1, 2])


def test_temperature_and_top_p_values_do_not_recompile():
    model = MODELS["tiny-gpt2"]
    clear_compile_cache()
    before = trace_count()
    first = generate(model, PROMPTS, 8, temperature=0.7, top_p=0.9, seed=1)
    second = generate(model, PROMPTS, 8, temperature=1.6, top_p=0.5, seed=1)
    assert trace_count() - before == 1  # one program for both
    assert first != second
    clear_compile_cache()  # the same values in a program of their own: the same tokens
    assert generate(model, PROMPTS, 8, temperature=1.6, top_p=0.5, seed=1) == second
    assert trace_count() - before == 2
