"""Does the 2017 Transformer, small, learn multi-digit addition on a CPU to 0.99 exact match on
held-out problems, in minutes?

Prints the figures of docs/performance.md, "Addition with the 2017 Transformer".

    python -m bench.addition_cpu [key=value ...]

Trains `configs/transformer_addition_cpu.yaml` (2 + 2 post-norm layers, d 128, batch 128, 2,000
steps, the paper's optimizer and label smoothing) from scratch in a fresh run directory, then
decodes 1,000 held-out problems (never trained on) greedily and prints the exact-match rate and the
wall time. The reference is Flax's Linen seq2seq example, which reaches accuracy 1.0 on addition
around step 1,800. Wall time counts everything from config to the last step (compilation, data,
evaluations and checkpoints included); the held-out decoding is timed separately.
"""

import argparse
import tempfile
import time


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="preset overrides")
    args = parser.parse_args()
    from jaxformer.train.host import restart_with_malloc_settings

    restart_with_malloc_settings(script=True)  # as `jaxformer train` does (see host.py)
    from bench.common import machine_line
    from jaxformer.config import load_config
    from jaxformer.train import train

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="jaxformer-bench-") as run_dir:
        config = load_config("transformer_addition_cpu", [f"train.run_dir={run_dir}",
                                                           "train.progress=false", *args.overrides])
        import_s = time.perf_counter() - started
        result = train(config)
        total = time.perf_counter() - started
    exact = result.report["exact_match"]
    print(f"\ntransformer_addition_cpu: {result.step} steps, batch {config.train.batch_size}")
    print(f"  held-out exact match  {exact:.4f} of {result.report['examples']} (target >= 0.99: "
          f"{'met' if exact >= 0.99 else 'NOT met'})")
    print(f"  val loss              {result.val_loss:.4f} (label-smoothed)")
    print(f"  train wall time       {result.wall_s:.1f} s ({1000 * result.wall_s / max(result.step, 1):.1f} ms a step)")
    print(f"  imports               {import_s:.1f} s; held-out decoding + plot "
          f"{total - import_s - result.wall_s:.1f} s")


if __name__ == "__main__":
    main()
