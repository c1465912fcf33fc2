"""The Shakespeare CPU preset trained for 200 steps once, and two things checked on that run.

1. The family registry changed nothing for the decoder: the first 20 losses and the greedy text,
   and a random Llama-style model's greedy tokens, equal those recorded before the change
   (tests/support/data/shakespeare_cpu_reference.json says how they were produced).
2. Decoding with bfloat16 weights (`with_weights_dtype`) costs a bounded accuracy: validation
   perplexity against the float32 model, with a float64 numpy cross-entropy, changes by less than
   PERPLEXITY_BOUND (1% relative, stated in the README; the test prints both perplexities). A
   model computing in float32 would show no difference at all, so the test also checks that
   something did change; casting leaves the float32 model and its greedy tokens alone."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxformer
from support.devices import ONE_DEVICE
from jaxformer.config import load_config
from jaxformer.data import load_corpus
from jaxformer.errors import UserError
from jaxformer.generate import generate
from jaxformer.generate.precision import with_weights_dtype
from jaxformer.train import load_run, train

REFERENCE = json.loads((Path(__file__).parents[1] / "support" / "data" / "shakespeare_cpu_reference.json").read_text())
PERPLEXITY_BOUND = 0.01  # relative change of validation perplexity, bf16 vs f32 weights


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("shakespeare") / "run"
    train(load_config("shakespeare_char_cpu", [ONE_DEVICE,
        f"train.run_dir={run_dir}", "train.steps=200",
        "train.log_every=1", "train.eval_batches=0", "train.progress=false",
        "train.sample_tokens=0", "train.checkpoint_every=200"]))
    return run_dir


@pytest.fixture(scope="module")
def trained(run_dir):
    _, model, tokenizer = load_run(run_dir, log=lambda *a, **k: None)
    return model, tokenizer


def test_shakespeare_cpu_losses_and_greedy_tokens_are_unchanged(run_dir, trained):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"][:20]
    np.testing.assert_allclose(losses, REFERENCE["losses"], rtol=0, atol=1e-6)

    model, tokenizer = trained
    prompt = tokenizer.encode(REFERENCE["greedy_prompt"])
    assert generate(model, [prompt], 40, temperature=0.0)[0] == REFERENCE["greedy_tokens"]


def test_random_llama_greedy_tokens_are_unchanged():
    model = jaxformer.DecoderLM(jaxformer.load_model_config("tiny-llama"), rngs=nnx.Rngs(0))
    tokens = generate(model, [REFERENCE["tiny_llama_prompt"]], 24, temperature=0.0)[0]
    assert tokens == REFERENCE["tiny_llama_greedy"]


def numpy_perplexity(model, rows: np.ndarray) -> float:
    """exp(mean next-token cross-entropy) over `rows` [n, len + 1], the log-softmax in float64."""
    logits = np.asarray(jax.jit(lambda t: model(t).logits)(jnp.asarray(rows[:, :-1])), np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, rows[:, 1:, None], -1)[..., 0]
    return math.exp(-picked.mean())


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
