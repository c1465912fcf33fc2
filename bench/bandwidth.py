"""Benchmark: memory read bandwidth, and the batch-1 decoding speed it allows GPT-2 small.

    python bench/bandwidth.py [--mib 512] [--repeats 20]

Batch-1 decoding reads every weight once per token, so tokens/s <= bandwidth / bytes of weights
(REFERENCE_NUMBERS.md, "Costs"). This measures the bandwidth on an array of --mib MiB (about GPT-2
small's 0.49 GB of float32 weights, far past the CPU caches) with a jit-compiled matrix-vector
product (what decoding does) and a jit-compiled sum (a pure read); numpy's matrix-vector product
(OpenBLAS) on the same matrix runs alongside as a reference outside XLA. Each figure is the
best and the median of --repeats runs; the machine is printed first. The script runs with the
glibc malloc settings of `jaxformer train` (jaxformer/train/host.py).
"""

import argparse
import os
import platform
import statistics
import subprocess
import time

import numpy as np


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in lines.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timings(fn, repeats: int) -> tuple[float, float]:
    """(best, median) seconds of `fn()` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the array read (MiB)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from jaxformer.train.host import restart_with_malloc_settings

    restart_with_malloc_settings(script=True)  # as `jaxformer train` runs
    import jax
    import jax.numpy as jnp

    from jaxformer.models.costs import count_params
    from jaxformer.presets import load_model_config

    cols = 4096
    rows = args.mib * 2**20 // (4 * cols)
    nbytes = 4 * rows * cols
    matrix = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32)
    vector = jax.random.normal(jax.random.key(1), (cols,), jnp.float32)
    matrix_np, vector_np = np.asarray(matrix), np.asarray(vector)
    matvec, total = jax.jit(jnp.matmul), jax.jit(jnp.sum)
    cases = {
        "jit matrix-vector product": (lambda: matvec(matrix, vector).block_until_ready(), nbytes),
        "jit sum": (lambda: total(matrix).block_until_ready(), nbytes),
        "numpy matrix-vector product": (lambda: matrix_np @ vector_np, nbytes),
    }

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; {jax.devices()[0].platform} backend, "
          f"jax {jax.__version__}")
    print(f"array: {rows} x {cols} float32 = {nbytes / 1e9:.3f} GB; best / median of {args.repeats}")
    rates = {}
    for name, (fn, moved) in cases.items():
        best, median = timings(fn, args.repeats)
        rates[name] = moved / best / 1e9
        print(f"  {name:32s} {rates[name]:6.1f} GB/s best, {moved / median / 1e9:6.1f} GB/s median")

    weights = 4 * count_params(load_model_config("gpt2-small"), include_positions=False)
    bandwidth = rates["jit matrix-vector product"]
    print(f"GPT-2 small reads {weights / 1e9:.3f} GB of float32 weights per decoded token (one "
          f"position row aside): at {bandwidth:.1f} GB/s, batch-1 decoding is capped at "
          f"{bandwidth * 1e9 / weights:.0f} tokens/s")


if __name__ == "__main__":
    main()
