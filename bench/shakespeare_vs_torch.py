"""Whole-command wall time: `jaxformer train shakespeare_char_cpu` vs the same recipe in PyTorch.

Each side runs as its own command in a fresh process, from interpreter start to exit (imports,
compilation, data, the 2000 steps, evaluations, checkpoints, the sample and the plot all count):
jaxformer's CLI on the preset, and bench/torch_shakespeare.py (HF transformers' GPT-2 code with
torch.optim.AdamW, same model, batch, steps, schedule and evaluation/checkpoint cadence). The two
alternate, `--repeats` times each; prints every run, the medians, their ratio and each side's
final validation loss, with the CPU model.

    python bench/shakespeare_vs_torch.py                    # 3 repeats each, about 15 min on 2 cores
    python bench/shakespeare_vs_torch.py --jax train.steps_per_call=1   # extra preset overrides
Goal (issue 16): jaxformer's wall time at most 0.5 of PyTorch's.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_model  # noqa: E402

VAL_LOSS = re.compile(r"val loss (\d+\.\d+)")


def timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, last validation loss printed, output) of one command; fails loudly."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}):\n{output[-3000:]}")
    losses = VAL_LOSS.findall(output)
    if not losses:
        sys.exit(f"{' '.join(command)} printed no validation loss:\n{output[-3000:]}")
    return wall, float(losses[-1]), output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="fewer steps (the decay follows)")
    parser.add_argument("--jax", nargs="*", default=[], help="extra key=value preset overrides")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    steps = [f"train.steps={args.steps}", f"optimizer.decay_steps={args.steps}"] if args.steps else []
    torch_steps = ["--steps", str(args.steps)] if args.steps else []
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} before the runs", flush=True)
    runs = {"jaxformer": [], "torch": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-shakespeare-") as tmp:
            jax_cmd = [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu",
                       f"train.run_dir={tmp}/jax", "train.progress=false", *steps, *args.jax]
            wall, loss, _ = timed(jax_cmd, env)
            runs["jaxformer"].append((wall, loss))
            print(f"run {repeat + 1}: jaxformer {wall:.1f} s (val loss {loss:.4f})", flush=True)
            if not args.no_torch:
                torch_cmd = [sys.executable, "bench/torch_shakespeare.py", "--out", f"{tmp}/torch",
                             *torch_steps]
                Path(tmp, "torch").mkdir()
                wall, loss, _ = timed(torch_cmd, env)
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
