"""Is the whole command `jaxformer train shakespeare_char_cpu` faster than the same recipe in
PyTorch, from interpreter start to exit, and does it reach the same validation loss?

Prints the figures of docs/performance.md, "The Shakespeare recipe" (the rows of validation loss
and of the whole command's wall time).

    python -m bench.shakespeare_vs_torch            # 3 repeats each, about 15 minutes on 2 cores
    python -m bench.shakespeare_vs_torch --jax train.steps_per_call=1   # extra preset overrides

Each side runs as its own command in a fresh process, so imports, compilation, data, the 2,000
steps, evaluations, checkpoints, the sample and the plot all count: jaxformer's CLI on the preset,
and `python -m bench.torch_shakespeare` (HF transformers' GPT-2 code with torch.optim.AdamW, same
model, batch, steps, schedule and evaluation/checkpoint cadence). The two alternate, `--repeats`
times each; prints every run, the medians, their ratio and each side's final validation loss.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_line

ROOT = Path(__file__).resolve().parents[1]  # both commands start here, where `-m` finds them
VAL_LOSS = re.compile(r"val loss (\d+\.\d+)")


def run_command(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, last validation loss printed, output) of one command, from the start of its
    process to its exit; fails loudly."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}):\n{output[-3000:]}")
    losses = VAL_LOSS.findall(output)
    if not losses:
        sys.exit(f"{' '.join(command)} printed no validation loss:\n{output[-3000:]}")
    return wall, float(losses[-1]), output


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="fewer steps (the decay follows)")
    parser.add_argument("--jax", nargs="*", default=[], help="extra key=value preset overrides")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    steps = [f"train.steps={args.steps}", f"optimizer.decay_steps={args.steps}"] if args.steps else []
    torch_steps = ["--steps", str(args.steps)] if args.steps else []
    print(machine_line(), flush=True)
    runs = {"jaxformer": [], "torch": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-shakespeare-") as tmp:
            jax_cmd = [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu",
                       f"train.run_dir={tmp}/jax", "train.progress=false", *steps, *args.jax]
            wall, loss, _ = run_command(jax_cmd)
            runs["jaxformer"].append((wall, loss))
            print(f"run {repeat + 1}: jaxformer {wall:.1f} s (val loss {loss:.4f})", flush=True)
            if not args.no_torch:
                torch_cmd = [sys.executable, "-m", "bench.torch_shakespeare", "--out",
                             f"{tmp}/torch", *torch_steps]
                Path(tmp, "torch").mkdir()
                wall, loss, _ = run_command(torch_cmd)
                runs["torch"].append((wall, loss))
                print(f"run {repeat + 1}: PyTorch {wall:.1f} s (val loss {loss:.4f})", flush=True)

    ours = statistics.median(w for w, _ in runs["jaxformer"])
    line = f"median of {args.repeats}: jaxformer {ours:.1f} s"
    if runs["torch"]:
        theirs = statistics.median(w for w, _ in runs["torch"])
        line += f", PyTorch {theirs:.1f} s; ratio of wall times {ours / theirs:.2f} (goal <= 0.5)"
    print(line)
    print(f"load average after the runs {os.getloadavg()[0]:.1f} (above the core count, timings "
          f"are noisy)")


if __name__ == "__main__":
    main()
