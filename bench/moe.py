"""Benchmark: a mixture of experts against a dense model with the same active parameters.

    python bench/moe.py [--steps 2000] [key=value ...]

Trains `shakespeare_char_cpu` (dense: 4 layers, d 128, feed-forward width 512) and
`shakespeare_char_cpu_moe` (the same with 8 experts of width 256 in every layer, top-2: a token
uses 2 x 256 = 512 hidden units, as in the dense model) for the same steps on the same batches, one
after the other in this process, and prints tokens/s (median over the logged intervals, compile
and evaluations excluded) and the validation loss at the last step. Targets (issue 13): the MoE at
least 0.7x the dense tokens/s and a lower validation loss. One run of each.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="MoE vs dense with the same active parameters")
    parser.add_argument("--steps", type=int, default=2000)
    args, overrides = parser.parse_known_args()
    from jaxformer.train.host import restart_with_malloc_settings

    restart_with_malloc_settings(script=True)  # as `jaxformer train` does (see host.py)
    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine_line

    from jaxformer.config import load_config
    from jaxformer.models.costs import param_counts
    from jaxformer.train import RunDir, train

    steps = args.steps
    print(machine_line())
    results = {}
    for preset in ("shakespeare_char_cpu", "shakespeare_char_cpu_moe"):
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
        results[preset] = dict(val=result.val_loss, rate=statistics.median(rates), wall=wall,
                               total=counts.total, active=active, loads=loads)
        print(f"{preset}: {counts.total:,} parameters, {active:,} active; val loss "
              f"{result.val_loss:.4f} after {result.step} steps; {statistics.median(rates):.0f} "
              f"tokens/s (median of {len(rates)} log intervals); {wall:.1f} s", flush=True)
    dense, moe = results["shakespeare_char_cpu"], results["shakespeare_char_cpu_moe"]
    ratio = moe["rate"] / dense["rate"]
    print(f"\nMoE / dense tokens/s: {ratio:.2f} (target >= 0.7: {'met' if ratio >= 0.7 else 'NOT met'})")
    better = moe["val"] < dense["val"]
    print(f"val loss: MoE {moe['val']:.4f} vs dense {dense['val']:.4f} (target lower: "
          f"{'met' if better else 'NOT met'})")
    if moe["loads"]:
        print("router statistics at the last step: " + ", ".join(
            f"{k.removeprefix('moe/')} {v:.3f}" for k, v in sorted(moe["loads"].items())))
