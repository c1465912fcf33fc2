"""Benchmark: what the glibc malloc settings of `jaxformer train` on CPU are worth.

    python bench/malloc.py [--steps 400] [--rounds 2] [key=value ...]

`jaxformer train` restarts itself once with malloc settings that keep freed memory in the process
(jaxformer/train/host.py); JAXFORMER_KEEP_MALLOC=1 turns that off. This runs the same short
training of the `shakespeare_char_cpu` preset as two subprocesses, with the settings (the default)
and without them, alternating `--rounds` times so that a drift in the machine's load hits both.
For each run it prints the median time per step over the log intervals after the first (which
holds the compilation), and the run's user and kernel CPU seconds; then the ratio of the medians.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bandwidth import cpu_model

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "JAXFORMER_KEEP_MALLOC")


def run(keep_malloc: bool, steps: int, overrides: list[str]) -> dict:
    """One `jaxformer train` subprocess: ms per step (median over log intervals) and CPU seconds."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env["PYTHONPATH"] = str(REPO)
    if keep_malloc:
        env["JAXFORMER_KEEP_MALLOC"] = "1"
    with tempfile.TemporaryDirectory(prefix="jaxformer-malloc-") as run_dir:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu",
             f"train.run_dir={run_dir}", f"train.steps={steps}", "train.log_every=50",
             "train.eval_every=100000", "train.eval_batches=1", "train.checkpoint_every=100000",
             "train.sample_tokens=0", "train.progress=false", *overrides],
            env=env, check=True, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        config = (Path(run_dir) / "config.yaml").read_text()
    tokens_per_step = _config_value(config, "batch_size") * _config_value(config, "seq_len")
    rates = [r["tokens_per_s"] for r in records if r["kind"] == "train"][1:]
    return {"ms_per_step": 1000 * tokens_per_step / statistics.median(rates),
            "user_s": after.ru_utime - before.ru_utime, "kernel_s": after.ru_stime - before.ru_stime}


def _config_value(yaml_text: str, key: str) -> int:
    import yaml

    return int(yaml.safe_load(yaml_text)["train"][key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; shakespeare_char_cpu, {args.steps} steps "
          f"a run")
    results = {"settings (default)": [], "JAXFORMER_KEEP_MALLOC=1": []}
    for _ in range(args.rounds):
        for name in results:
            result = run(name != "settings (default)", args.steps, args.overrides)
            results[name].append(result)
            print(f"  {name:24s} {result['ms_per_step']:6.1f} ms/step   CPU: user "
                  f"{result['user_s']:5.1f} s, kernel {result['kernel_s']:5.1f} s")
    medians = {name: statistics.median(r["ms_per_step"] for r in runs) for name, runs in results.items()}
    with_settings, without = medians["settings (default)"], medians["JAXFORMER_KEEP_MALLOC=1"]
    print(f"median ms/step: {with_settings:.1f} with the settings, {without:.1f} without: "
          f"{without / with_settings:.2f}x slower without ({1 - with_settings / without:.0%} of the "
          f"step time saved)")


if __name__ == "__main__":
    main()
