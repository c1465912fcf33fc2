"""What are the glibc malloc settings of `jaxformer train` on a CPU worth, in time per step?

Prints the figures of docs/performance.md, "CPU allocator settings".

    python -m bench.malloc [--preset PRESET] [--steps 400] [--rounds 2] [key=value ...]

`jaxformer train` restarts itself once with malloc settings that keep freed memory in the process
and back it with transparent huge pages (jaxformer/train/host.py); JAXFORMER_KEEP_MALLOC=1 turns
them off. This runs the same short training of a preset as subprocesses with all the settings (the
default), with the thresholds but not the huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=0), and
with none, alternating `--rounds` times so that a drift in the machine's load hits each alike. For
each run it prints the median time per step over the log intervals after the first (which holds
the compilation), the run's user and kernel CPU seconds and its page faults; then each variant's
median against the default. `--preset shakespeare_char_cpu_moe` shows the huge pages' part: its
step's temporaries exceed the 64 MiB a glibc thread arena can hold.
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

from bench.common import machine_line
from jaxformer.train.host import OPT_OUT, SETTING_NAMES

REPO = Path(__file__).resolve().parents[1]
SETTINGS = (*SETTING_NAMES, OPT_OUT)  # cleared, then set per variant
VARIANTS = {  # name -> environment the `jaxformer train` subprocess starts with
    "all settings (default)": {},
    "no huge pages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
    f"{OPT_OUT}=1": {OPT_OUT: "1"},
}


def run(preset: str, variant: dict, steps: int, overrides: list[str]) -> dict:
    """One `jaxformer train` subprocess: ms per step (median over log intervals), CPU seconds and
    minor page faults."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env["PYTHONPATH"] = str(REPO)  # the subprocesses train with this checkout's jaxformer
    env.update(variant)
    with tempfile.TemporaryDirectory(prefix="jaxformer-malloc-") as run_dir:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [sys.executable, "-m", "jaxformer", "train", preset,
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
            "user_s": after.ru_utime - before.ru_utime, "kernel_s": after.ru_stime - before.ru_stime,
            "page_faults": after.ru_minflt - before.ru_minflt}


def _config_value(yaml_text: str, key: str) -> int:
    import yaml

    return int(yaml.safe_load(yaml_text)["train"][key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="shakespeare_char_cpu")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    print(machine_line())
    print(f"{args.preset}, {args.steps} steps a run")
    results = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, variant in VARIANTS.items():
            result = run(args.preset, variant, args.steps, args.overrides)
            results[name].append(result)
            print(f"  {name:24s} {result['ms_per_step']:6.1f} ms/step   CPU: user "
                  f"{result['user_s']:5.1f} s, kernel {result['kernel_s']:5.1f} s; "
                  f"{result['page_faults']:,} page faults")
    medians = {name: statistics.median(r["ms_per_step"] for r in runs) for name, runs in results.items()}
    default = medians["all settings (default)"]
    print(f"median ms/step: {default:.1f} with all the settings", end="")
    for name, median in list(medians.items())[1:]:
        print(f"; {name}: {median:.1f}, {median / default:.2f}x", end="")
    print()


if __name__ == "__main__":
    main()
