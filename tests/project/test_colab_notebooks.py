"""Every notebook in colab/ is valid nbformat 4, shaped for Colab (a title, one parameters cell
before one install cell, plain Python), and runs top to bottom here on the CPU at a tiny size: its
code cells in one namespace as in a kernel, the parameters cell's values replaced by CI's as
papermill does, the install cell skipped (tests/project/test_colab.py runs the quickstart through its own
install cell; here the checkout is on PYTHONPATH). Each figure a notebook says it drew is a real
PNG with something drawn on it, and its printed figures are checked against what they claim:
accuracies in [0, 1] and equal to the confusion matrix's diagonal, sums right, the held-out split's
size, validation losses finite and falling, the cascade within its budget."""

import json
import math
import os
import re
import subprocess
import sys
import warnings

import matplotlib.image
import nbformat
import numpy as np
import pytest

from support.locations import REPO, subprocess_env
from support.waiting import SAFETY_TIMEOUT_S

COLAB = REPO / "colab"

# Runs the notebook's code cells in one namespace, except the cell tagged "install"; after the
# cell tagged "parameters", the values CI chooses are set.
DRIVER = """
import json, sys
notebook, overrides = json.load(open(sys.argv[1])), sys.argv[2]
namespace = {"__name__": "__main__"}
for cell in notebook["cells"]:
    tags = cell["metadata"].get("tags", [])
    if cell["cell_type"] != "code" or "install" in tags:
        continue
    exec(compile("".join(cell["source"]), "<cell>", "exec"), namespace)
    if "parameters" in tags:
        exec(overrides, namespace)
"""

# Tiny models, a few steps; warm-up short enough that the validation loss falls within them.
QUIET = '"train.progress=false", "train.log_every=5"'
OVERRIDES = {
    "bert.ipynb": f"""
PRETRAIN_STEPS = 10
FINETUNE_STEPS = 10
OVERRIDES = ["model.d_model=32", "model.num_layers=1", "model.num_heads=2", "model.mlp_dim=64",
             "data.vocab_size=1000", "train.batch_size=8", "train.seq_len=32",
             "train.eval_every=10", "train.eval_batches=1", "optimizer.warmup_steps=2", {QUIET}]
""",
    "seq2seq.ipynb": f"""
TRAIN_STEPS = 20
OVERRIDES = ["model.d_model=32", "model.encoder_layers=1", "model.decoder_layers=1",
             "model.num_heads=2", "model.mlp_dim=64", "train.batch_size=16", "train.eval_every=20",
             "train.eval_batches=1", "task.report_examples=50", "optimizer.warmup_steps=5", {QUIET}]
""",
    "vision.ipynb": f"""
VIT_STEPS = 20
CLIP_STEPS = 20
COMMON = ["train.batch_size=32", "train.eval_every=20", "train.steps_per_call=10",
          "optimizer.warmup_steps=0", "optimizer.lr=3e-3", {QUIET}]
VIT_OVERRIDES = ["model.d_model=32", "model.num_layers=1", "model.num_heads=2", "model.mlp_dim=64",
                 *COMMON]
CLIP_OVERRIDES = [*(f"model.{{tower}}.{{key}}" for tower in ("text", "vision") for key in
                    ("d_model=32", "num_layers=1", "num_heads=2", "mlp_dim=64")),
                  "model.projection_dim=32", *COMMON]
""",
    "finetune.ipynb": f"""
BASE_STEPS = 20
FINETUNE_STEPS = 10
SMALL_STEPS = 10
OVERRIDES = ["model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=32",
             "train.seq_len=32", "train.batch_size=8", "train.eval_batches=1",
             "train.sample_tokens=0", "optimizer.warmup_steps=0", "finetune.quantize_group_size=32",
             {QUIET}]
SMALL_MODEL = ["model.num_layers=1", "model.d_model=16"]
CASCADE_QUERIES = 200
""",
}
COVERED_ELSEWHERE = {"quickstart.ipynb": "project/test_colab.py"}
NOTEBOOKS = sorted(p.name for p in COLAB.glob("*.ipynb"))
NUMBER = r"(-?[\d.]+(?:e-?\d+)?|nan|inf)"


def load(name: str) -> dict:
    return json.loads((COLAB / name).read_text())


def code_cells(notebook: dict) -> list[dict]:
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def tagged(notebook: dict, tag: str) -> list[int]:
    return [i for i, c in enumerate(code_cells(notebook)) if tag in c["metadata"].get("tags", [])]


def test_every_notebook_is_run_by_a_test():
    """A notebook added to colab/ without a test here (or in the test named) fails this."""
    assert NOTEBOOKS, "colab/ holds no notebooks"
    for name in NOTEBOOKS:
        elsewhere = COVERED_ELSEWHERE.get(name)
        tested_there = elsewhere and name in (REPO / "tests" / elsewhere).read_text()
        assert name in OVERRIDES or tested_there, (
            f"colab/{name} is run by no test: add its CI parameters to OVERRIDES and its checks")
    assert set(OVERRIDES) <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_shaped_for_colab(name):
    notebook = load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing cell id is only a warning in nbformat 5
        nbformat.validate(notebook)
    assert (notebook["nbformat"], notebook["metadata"]["accelerator"]) == (4, "TPU")
    assert "".join(notebook["cells"][0]["source"]).startswith("# ")  # a title first
    cells = code_cells(notebook)
    parameters, install = tagged(notebook, "parameters"), tagged(notebook, "install")
    assert len(parameters) == 1 and len(install) == 1 and parameters[0] < install[0]
    assert "JAXFORMER_SOURCE = " in "".join(cells[parameters[0]]["source"])
    install_source = "".join(cells[install[0]]["source"])
    assert '"pip", "install"' in install_source and "JAXFORMER_SOURCE" in install_source
    for cell in cells:
        assert not cell.get("outputs") and cell.get("execution_count") is None  # shipped clean
        for line in "".join(cell["source"]).splitlines():
            assert not line.lstrip().startswith(("!", "%")), line  # no shell escapes or magics


@pytest.fixture(scope="module")
def xla_flags() -> str:
    """Tiny models: compiling dominates their time, so the CPU backend optimises less."""
    cheap = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    return f"{os.environ.get('XLA_FLAGS', '')} {cheap}".strip()


def run_notebook(name: str, work, xla_flags: str) -> str:
    env = subprocess_env(MPLBACKEND="Agg", XLA_FLAGS=xla_flags)
    done = subprocess.run([sys.executable, "-c", DRIVER, str(COLAB / name), OVERRIDES[name]],
                          cwd=work, env=env, capture_output=True, text=True,
                          timeout=SAFETY_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def check_figures(out: str, work, expected: list[str]) -> dict[str, str]:
    """The figures the notebook printed (`figure: PATH (WHAT)`), each a PNG of plausible size
    with more than one colour in it; returns {path: what}."""
    figures = dict(re.findall(r"^figure: (\S+) \((.+)\)$", out, re.M))
    assert list(figures) == expected
    for path in figures:
        data = (work / path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", path
        pixels = matplotlib.image.imread(work / path)
        height, width = pixels.shape[:2]
        assert 300 <= width <= 3000 and 150 <= height <= 3000, (path, pixels.shape)
        assert pixels[..., :3].std() > 0.01, f"{path} is blank"
    return figures


def falling_validation_loss(work, run: str) -> tuple[float, float]:
    """The run's first and last validation loss, from its metrics.jsonl: finite, and falling."""
    records = [json.loads(line) for line in (work / run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["val_loss"] for r in sorted(records, key=lambda r: r["step"])
              if r["kind"] == "eval"]
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) >= 2 and train_losses
    assert all(math.isfinite(x) for x in losses + train_losses), (run, losses, train_losses)
    assert losses[-1] < losses[0], (run, losses)
    return losses[0], losses[-1]


def probabilities(line: str) -> list[tuple[str, float]]:
    """`a 0.120, b 0.080` -> [("a", 0.12), ("b", 0.08)]: falling, in [0, 1], summing to <= 1."""
    pairs = [(label, float(p)) for label, p in re.findall(r"(.+?) (\d\.\d{3})(?:, |$)", line)]
    values = [p for _, p in pairs]
    assert all(0.0 <= p <= 1.0 for p in values) and sum(values) <= 1.0 + 1e-3, line
    assert values == sorted(values, reverse=True), line
    return [(label.strip(), p) for label, p in pairs]


@pytest.mark.slow
def test_bert_notebook(tmp_path, xla_flags):
    out = run_notebook("bert.ipynb", tmp_path, xla_flags)
    figures = check_figures(out, tmp_path, ["runs/bert_shakespeare/loss.png",
                                            "figures/bert_attention.png",
                                            "runs/bert_speakers/loss.png"])
    accuracy, unigram = map(float, re.search(
        rf"masked-token accuracy {NUMBER} \(unigram baseline {NUMBER}", out).groups())
    assert 0.0 <= accuracy <= 1.0 and 0.0 < unigram < 1.0
    speakers, majority = map(float, re.search(
        rf"speaker accuracy {NUMBER} on held-out speeches \(majority baseline {NUMBER}\)",
        out).groups())
    held_out = int(re.search(r"(\d+) validation examples; 8 labels", out).group(1))
    for value in (speakers, majority):  # a share of the held-out speeches
        assert 0.0 <= value <= 1.0 and abs(value * held_out - round(value * held_out)) < 0.01
    falling_validation_loss(tmp_path, "runs/bert_shakespeare")
    # A text with two [MASK]s, then two classified texts, top 3 each; the labels are the run's.
    guesses = re.findall(r"^  \[MASK\] (\d) -> (.+)$", out, re.M)
    assert [i for i, _ in guesses] == ["1", "2"]
    assert all(len(probabilities(g)) == 3 for _, g in guesses)
    labels = json.loads((tmp_path / "runs/bert_speakers/labels.json").read_text())["labels"]
    classified = re.findall(r"^  -> (.+)$", out, re.M)
    assert len(classified) == 2 and len(labels) == 8
    for line in classified:
        assert {label for label, _ in probabilities(line)} <= set(labels)
    # The overrides made 1 layer of 2 heads; the pair is [CLS] 6 words [SEP] 4 words [SEP] in
    # pieces, at least 13.
    pieces = int(re.fullmatch(r"attention maps of 1 x 2 \(layers x heads\) over (\d+) pieces",
                              figures["figures/bert_attention.png"]).group(1))
    assert pieces >= 13


@pytest.mark.slow
def test_seq2seq_notebook(tmp_path, xla_flags):
    out = run_notebook("seq2seq.ipynb", tmp_path, xla_flags)
    figures = check_figures(out, tmp_path, ["runs/addition/loss.png",
                                            "figures/addition_cross_attention.png"])
    exact, examples = re.search(rf"held-out exact match {NUMBER} over (\d+) problems", out).groups()
    assert 0.0 <= float(exact) <= 1.0 and int(examples) == 50
    falling_validation_loss(tmp_path, "runs/addition")
    rows = re.findall(r"^ *(\d+)\+(\d+) = (\d+) +greedy '([^']*)' +beam search '([^']*)'$",
                      out, re.M)
    assert len(rows) == 6
    right = {"greedy": 0, "beam": 0}
    for a, b, answer, greedy, beam in rows:
        assert int(answer) == int(a) + int(b)
        right["greedy"] += greedy == answer
        right["beam"] += beam == answer
    assert f"right: greedy {right['greedy']} of 6, beam search {right['beam']} of 6" in out
    # "352+79": the answer's 3 digits and the end token (rows) by 6 source characters.
    assert figures["figures/addition_cross_attention.png"] == (
        "cross-attention maps of 1 x 2 (decoder layers x heads), 4 output x 6 source tokens")


@pytest.mark.slow
def test_vision_notebook(tmp_path, xla_flags):
    from sklearn.datasets import load_digits

    out = run_notebook("vision.ipynb", tmp_path, xla_flags)
    check_figures(out, tmp_path, ["figures/digits.png", "runs/vit/loss.png",
                                  "figures/vit_confusion.png", "runs/clip/loss.png",
                                  "figures/clip_confusion.png"])
    images = len(load_digits().target)
    for kind in ("ViT held-out accuracy", "CLIP zero-shot accuracy"):
        accuracy, total, right = re.search(
            rf"{kind} {NUMBER} on (\d+) held-out images \((\d+) right", out).groups()
        # The matrix holds every held-out image once: a fifth, the last of a shuffle.
        assert int(total) == images - int(images * 0.8)
        assert 0.0 <= float(accuracy) <= 1.0
        assert abs(float(accuracy) - int(right) / int(total)) < 1e-4  # the diagonal's share
    falling_validation_loss(tmp_path, "runs/vit")
    falling_validation_loss(tmp_path, "runs/clip")


@pytest.mark.slow
def test_finetune_notebook(tmp_path, xla_flags):
    out = run_notebook("finetune.ipynb", tmp_path, xla_flags)
    check_figures(out, tmp_path, ["runs/base/loss.png", "figures/lora_qlora_loss.png",
                                  "figures/cascade.png"])
    speeches = (tmp_path / "gloucester.txt").read_text().split("\n\n")
    assert all(s.startswith("GLOUCESTER:") for s in speeches)
    assert f"{len(speeches)} speeches" in out
    lora, qlora = (falling_validation_loss(tmp_path, f"runs/{run}") for run in ("lora", "qlora"))
    # Step 0 is the base model (B = 0); QLoRA's is the NF4-stored base, close to it.
    assert abs(qlora[0] - lora[0]) < 0.02 * lora[0]
    for run in ("lora", "qlora"):
        assert (tmp_path / "runs" / run / "adapter" / "adapter_model.safetensors").stat().st_size
    figures = json.loads((tmp_path / "cascade.json").read_text())
    costs = {m["name"]: m["cost"] for m in figures["models"]}
    assert costs["base"] == 1.0 and 0.0 < costs["small"] < 1.0
    assert all(0.0 <= m["test_accuracy"] <= 1.0 for m in figures["models"])
    assert figures["test"]["cost"] <= 0.5 * 1.1  # the budget holds on the test queries
    curve = np.asarray([[p["cost"], p["accuracy"]] for p in figures["curve"]])
    assert len(curve) == 25 and np.all((curve[:, 1] >= 0) & (curve[:, 1] <= 1))
    # A query costs at least the cheapest model, at most every model in turn.
    assert np.all((curve[:, 0] >= min(costs.values()) - 1e-9)
                  & (curve[:, 0] <= sum(costs.values()) + 1e-9))
    assert (f"cascade within half the big model's cost: test accuracy "
            f"{figures['test']['accuracy']:.4f} at cost {figures['test']['cost']:.3f}") in out
