"""Does a mixture of experts with the same active parameters as a dense model keep 0.7x its
training speed and reach a lower validation loss?

Prints the figures of docs/performance.md, "Mixture of experts" (the rows of training tokens/s
and validation loss); bench/moe_layer.py times one sublayer alone.

    python -m bench.moe [--steps 2000] [--rounds 3] [key=value ...]

Trains `shakespeare_char_cpu` (dense: 4 layers, d 128, feed-forward width 512) and
`shakespeare_char_cpu_moe` (the same with 8 experts of width 256 in every layer, top-2: a token
uses 2 x 256 = 512 hidden units, as in the dense model) for the same steps on the same batches, one
after the other in this process, `--rounds` times alternately (the machine's drift hits both
alike), and prints each run's tokens/s (median over the logged intervals, compile and evaluations
excluded) and validation loss at the last step, then the ratio of the two presets' medians over
the rounds. Runs are seeded, so every round ends at the same losses.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine_line, same_allocator
from jaxformer.config import load_config
from jaxformer.models.counting import param_counts
from jaxformer.train import RunDir, train


def run(preset: str, steps: int, overrides: list[str]) -> dict:
    """Train `preset` for `steps` in a temporary run directory; print and return its figures."""
    with tempfile.TemporaryDirectory(prefix="jaxformer-bench-") as run_dir:
        config = load_config(preset, [f"train.run_dir={run_dir}", "train.progress=false",
                                      f"train.steps={steps}", f"optimizer.decay_steps={steps}",
                                      "train.sample_tokens=0", *overrides])
        start = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - start
        lines = RunDir(Path(run_dir)).metrics.read_text().splitlines()
        records = [r for r in map(json.loads, lines) if r["kind"] == "train"]
    rates = [r["tokens_per_s"] for r in records][1:]  # the first interval holds compilation
    counts = param_counts(config.model)
    active = counts.active if counts.active is not None else counts.total
    loads = {k: v for k, v in records[-1].items() if k.startswith("moe/")} if records else {}
    print(f"{preset}: {counts.total:,} parameters, {active:,} active; val loss "
          f"{result.val_loss:.4f} after {result.step} steps; {statistics.median(rates):.0f} "
          f"tokens/s (median of {len(rates)} log intervals); {wall:.1f} s", flush=True)
    return dict(val=result.val_loss, rate=statistics.median(rates), loads=loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args, overrides = parser.parse_known_args()  # the rest: key=value overrides of both presets
    allocator = same_allocator()  # as `jaxformer train` does (restarts once; see host.py)
    print(machine_line())
    print(allocator)
    results = {"shakespeare_char_cpu": [], "shakespeare_char_cpu_moe": []}
    for _ in range(args.rounds):
        for preset, runs in results.items():
            runs.append(run(preset, args.steps, overrides))
    dense, moe = ({"rate": statistics.median(r["rate"] for r in runs), "val": runs[-1]["val"],
                   "loads": runs[-1]["loads"]} for runs in results.values())
    ratio = moe["rate"] / dense["rate"]
    print(f"\nMoE / dense tokens/s, medians of {args.rounds} runs: {moe['rate']:.0f} / {dense['rate']:.0f} "
          f"= {ratio:.2f} (target >= 0.7: {'met' if ratio >= 0.7 else 'NOT met'})")
    better = moe["val"] < dense["val"]
    print(f"val loss: MoE {moe['val']:.4f} vs dense {dense['val']:.4f} (target lower: "
          f"{'met' if better else 'NOT met'})")
    if moe["loads"]:
        print("router statistics at the last step: " + ", ".join(
            f"{k.removeprefix('moe/')} {v:.3f}" for k, v in sorted(moe["loads"].items())))


if __name__ == "__main__":
    main()
