"""Decoding with bfloat16 weights (`with_weights_dtype`): the accuracy it costs on a trained
Shakespeare model, measured against the float32 model with a float64 numpy cross-entropy, and
that casting leaves the float32 model and its greedy tokens alone.

The bound asserted is a 1% relative change of validation perplexity (PERPLEXITY_BOUND, stated
in the README); the test prints both perplexities. A model computing in float32 would show no
difference at all, so the test also checks that something did change."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.data import load_corpus
from jaxformer.errors import UserError
from jaxformer.generate import generate
from jaxformer.generate.precision import with_weights_dtype
from jaxformer.train import load_run, train

PERPLEXITY_BOUND = 0.01  # relative change of validation perplexity, bf16 vs f32 weights


def numpy_perplexity(model, rows: np.ndarray) -> float:
    """exp(mean next-token cross-entropy) over `rows` [n, len + 1], the log-softmax in float64."""
    logits = np.asarray(jax.jit(lambda t: model(t).logits)(jnp.asarray(rows[:, :-1])), np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, rows[:, 1:, None], -1)[..., 0]
    return math.exp(-picked.mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("precision") / "run"
    train(load_config("shakespeare_char_cpu", [
        f"train.run_dir={run_dir}", "train.steps=200", "train.eval_batches=0",
        "train.progress=false", "train.sample_tokens=0", "train.checkpoint_every=200"]))
    _, model, tokenizer = load_run(run_dir, log=lambda *a, **k: None)
    return model, tokenizer


def test_bf16_weights_change_perplexity_within_the_bound(trained):
    model, tokenizer = trained
    text = load_corpus("tinyshakespeare").documents[0]
    val = np.asarray(tokenizer.encode(text[int(len(text) * 0.9):]), np.int32)
    rows = val[:16 * 65].reshape(16, 65)  # 16 validation windows of the 64-token context
    low = with_weights_dtype(model, "bfloat16")
    weights = jax.tree.leaves(nnx.state(low, nnx.Param))
    assert all(w.dtype == jnp.bfloat16 for w in weights)
    exact, approx = numpy_perplexity(model, rows), numpy_perplexity(low, rows)
    print(json.dumps({"ppl_f32": exact, "ppl_bf16": approx}))
    assert exact < 20.0, "the model did not train (untrained: about 65): the comparison says little"
    assert approx != exact  # bf16 did compute
    assert abs(approx / exact - 1.0) < PERPLEXITY_BOUND, (exact, approx)


def test_casting_leaves_the_float32_model_and_its_greedy_tokens_alone(trained):
    model, tokenizer = trained
    prompt = tokenizer.encode("ROMEO:")
    before = generate(model, [prompt], 24, temperature=0.0)[0]
    weights = [np.asarray(w) for w in jax.tree.leaves(nnx.state(model, nnx.Param))]
    low = with_weights_dtype(model, "bfloat16")
    fast = generate(low, [prompt], 24, temperature=0.0)[0]
    assert len(fast) == 24 and all(0 <= t < model.config.vocab_size for t in fast)
    assert generate(model, [prompt], 24, temperature=0.0)[0] == before
    for w, again in zip(weights, jax.tree.leaves(nnx.state(model, nnx.Param))):
        assert again.dtype == jnp.float32 and np.array_equal(w, np.asarray(again))
    assert with_weights_dtype(model, "float32") is model


def test_unknown_dtype_is_refused(trained):
    with pytest.raises(UserError, match="weights dtype must be one of float32, bfloat16"):
        with_weights_dtype(trained[0], "int4")
