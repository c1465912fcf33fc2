"""The family registry changed nothing for the decoder: the Shakespeare CPU preset's first 20
losses and its greedy text, and a random Llama-style model's greedy tokens, equal those recorded
before the change (tests/data/shakespeare_cpu_reference.json says how they were produced)."""

import json
from pathlib import Path

import numpy as np
from flax import nnx

import jaxformer
from jaxformer.config import load_config
from jaxformer.generate import generate
from jaxformer.train import load_run, train


REFERENCE = json.loads((Path(__file__).parent / "data" / "shakespeare_cpu_reference.json").read_text())


def test_shakespeare_cpu_losses_and_greedy_tokens_are_unchanged(tmp_path):
    run_dir = tmp_path / "run"
    train(load_config("shakespeare_char_cpu", [
        f"train.run_dir={run_dir}", "train.steps=200",
        "train.log_every=1", "train.eval_batches=0", "train.progress=false",
        "train.sample_tokens=0", "train.checkpoint_every=200"]))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"][:20]
    np.testing.assert_allclose(losses, REFERENCE["losses"], rtol=0, atol=1e-6)

    _, model, tokenizer = load_run(run_dir)
    prompt = tokenizer.encode(REFERENCE["greedy_prompt"])
    assert generate(model, [prompt], 40, temperature=0.0)[0] == REFERENCE["greedy_tokens"]


def test_random_llama_greedy_tokens_are_unchanged():
    model = jaxformer.DecoderLM(jaxformer.load_model_config("tiny-llama"), rngs=nnx.Rngs(0))
    tokens = generate(model, [REFERENCE["tiny_llama_prompt"]], 24, temperature=0.0)[0]
    assert tokens == REFERENCE["tiny_llama_greedy"]
