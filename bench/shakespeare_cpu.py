"""Benchmark: nanoGPT's Shakespeare character-level CPU recipe, end to end.

    python bench/shakespeare_cpu.py [key=value ...]

Trains `configs/shakespeare_char_cpu.yaml` (4 layers, 4 heads, d 128, context 64, batch 12,
2000 iterations) from scratch in a fresh run directory, then prints the validation loss and the
wall time. Targets (REFERENCE_NUMBERS.md): nanoGPT's published val loss 1.88; on the project's
2-core machine PyTorch takes 140 s for the same run (val loss 1.886). Wall time here counts
everything from config to the last step: imports aside, compilation, data, evaluations and
checkpoints included; the sample printed afterwards is timed separately.
"""

import sys
import tempfile
import time

if __name__ == "__main__":
    started = time.perf_counter()
    from jaxformer.train.host import restart_with_malloc_settings

    restart_with_malloc_settings(script=True)  # as `jaxformer train` does (see host.py)
    from jaxformer.config import load_config
    from jaxformer.train import train

    with tempfile.TemporaryDirectory(prefix="jaxformer-bench-") as run_dir:
        config = load_config("shakespeare_char_cpu", [f"train.run_dir={run_dir}",
                                                      "train.progress=false", *sys.argv[1:]])
        import_s = time.perf_counter() - started
        result = train(config)
        total = time.perf_counter() - started
    steps = result.step
    print(f"\nshakespeare_char_cpu: {steps} iterations, batch {config.train.batch_size} x "
          f"{config.train.seq_len} tokens")
    print(f"  val loss          {result.val_loss:.4f}   (nanoGPT: 1.88; target <= 1.88: "
          f"{'met' if result.val_loss <= 1.88 else 'NOT met'})")
    print(f"  train wall time   {result.wall_s:.1f} s   (PyTorch on 2 cores: 140 s)")
    print(f"  tokens/s          {result.tokens_per_s:.0f}   (average over the run, evaluations "
          f"and compilation included)")
    print(f"  ms per iteration  {1000 * result.wall_s / max(steps, 1):.1f}")
    print(f"  imports           {import_s:.1f} s; sample + plot {total - import_s - result.wall_s:.1f} s")
