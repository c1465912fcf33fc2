"""How fast does this machine read memory, and what batch-1 decoding speed of GPT-2 small does
that allow?

Prints the figures of docs/performance.md, "Decoding GPT-2 small" (the row of read bandwidth);
bench/generate.py measures the same bandwidth again for its cap.

    python -m bench.bandwidth [--mib 512] [--repeats 20]

Batch-1 decoding reads every weight once per token, so tokens/s <= bandwidth / bytes of weights.
This measures the bandwidth on an array of --mib MiB (about GPT-2 small's 0.49 GB of float32
weights, far past the CPU caches) with a jit-compiled matrix-vector product (what decoding does)
and a jit-compiled sum (a pure read); numpy's matrix-vector product (OpenBLAS) on the same matrix
runs alongside as a reference outside XLA. Each figure is the best and the median of --repeats
runs after one warm-up. The script runs with the glibc malloc settings of `jaxformer train`
(jaxformer/train/host.py).
"""

import argparse

import numpy as np

from bench.common import machine_line, same_allocator, time_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the array read (MiB)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    allocator = same_allocator()  # restarts once, as `jaxformer train` runs
    import jax
    import jax.numpy as jnp

    from jaxformer.models.counting import count_params
    from jaxformer.presets import load_model_config

    cols = 4096
    rows = args.mib * 2**20 // (4 * cols)
    nbytes = 4 * rows * cols
    matrix = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32)
    vector = jax.random.normal(jax.random.key(1), (cols,), jnp.float32)
    matrix_np, vector_np = np.asarray(matrix), np.asarray(vector)
    matvec, total = jax.jit(jnp.matmul), jax.jit(jnp.sum)
    cases = {
        "jit matrix-vector product": (lambda: matvec(matrix, vector), nbytes),
        "jit sum": (lambda: total(matrix), nbytes),
        "numpy matrix-vector product": (lambda: matrix_np @ vector_np, nbytes),
    }

    print(machine_line())
    print(allocator)
    print(f"array: {rows} x {cols} float32 = {nbytes / 1e9:.3f} GB; best / median of {args.repeats}")
    rates = {}
    for name, (fn, moved) in cases.items():
        runs = time_calls(fn, args.repeats, warmup=1)
        rates[name] = moved / runs.best / 1e9
        print(f"  {name:32s} {rates[name]:6.1f} GB/s best, {moved / runs.median / 1e9:6.1f} GB/s median")

    weights = 4 * count_params(load_model_config("gpt2-small"), include_positions=False)
    bandwidth = rates["jit matrix-vector product"]
    print(f"GPT-2 small reads {weights / 1e9:.3f} GB of float32 weights per decoded token (one "
          f"position row aside): at {bandwidth:.1f} GB/s, batch-1 decoding is capped at "
          f"{bandwidth * 1e9 / weights:.0f} tokens/s")


if __name__ == "__main__":
    main()
