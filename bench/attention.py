"""At long lengths on a CPU, how do chunked and block-sparse causal attention compare with dense
attention, in memory and in time?

Prints the figures of docs/performance.md, "Attention" (the tables of temporaries at T and of
times at T).

    python -m bench.attention [--lengths 1024,2048,...] [--sparse-length 16384] [--dense-max-gib 6]

Forward + backward, 8 heads of 64, batch 1, float32. Three parts, each against a reference run in
this script:

1. Memory per T (XLA's compiled memory analysis of the jitted gradient: nothing is allocated, so
   every T is shown): dense attention (`jax.nn.dot_product_attention`, the [T, T] scores kept for
   the backward pass) against chunked attention and the block-sparse patterns, whose working
   memory should grow linearly with T.
2. Block-sparse strided, fixed and sliding at `--sparse-length` against dense attention with the
   same mask. The dense reference runs one head at a time (`jax.lax.map` over the heads: the same
   arithmetic as all heads at once) so that its [T, T] scores fit in this machine's memory.
3. Chunked causal attention against dense causal attention at every T where dense fits in
   `--dense-max-gib` of temporaries.

Times are the best of `--repeats` runs after compiling ahead of time (the 16k dense-with-mask
references: one run each).
"""

import argparse

import jax
import jax.numpy as jnp

from bench.common import machine_line, time_calls
from jaxformer.nn.attention_ops import attention_mask
from jaxformer.nn.chunked_attention import chunked_attention, live_fraction
from jaxformer.nn.sparse_attention import SparsePattern

HEADS, HEAD_DIM, SCALE = 8, 64, 0.125
PATTERNS = {
    "sliding": SparsePattern("sliding", window=1024),
    "strided": SparsePattern("strided", stride=128),
    "fixed": SparsePattern("fixed", stride=128, summary=16),
}


def grad_fn(attend):
    """Forward + backward of sum(attention * w): gradients for q, k and v."""
    def loss(q, k, v, w):
        return jnp.sum(attend(q, k, v) * w)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def dense_causal(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, scale=SCALE, is_causal=True)


def chunked(pattern=None):
    return lambda q, k, v: chunked_attention(q, k, v, scale=SCALE, causal=True, pattern=pattern)


def dense_masked_by_head(pattern):
    """Dense attention with the pattern's [T, T] mask, one head at a time."""
    def attend(q, k, v):
        t = q.shape[1]
        index = jnp.arange(t)[None]
        mask = attention_mask(index, index, None, None, causal=True, pattern=pattern)  # [1, 1, T, T]

        def one_head(qkv):
            qh, kh, vh = (x[:, :, None] for x in qkv)
            return jax.nn.dot_product_attention(qh, kh, vh, mask=mask, scale=SCALE)[:, :, 0]

        heads = [jnp.moveaxis(x, 2, 0) for x in (q, k, v)]
        return jnp.moveaxis(jax.lax.map(one_head, heads), 0, 2)
    return attend


def shapes(t):
    x = jax.ShapeDtypeStruct((1, t, HEADS, HEAD_DIM), jnp.float32)
    return x, x, x, x


def compiled(attend, t):
    return grad_fn(attend).lower(*shapes(t)).compile()


def memory(attend, t) -> tuple[int, int]:
    """(temporaries, temporaries + arguments + outputs) in bytes."""
    m = compiled(attend, t).memory_analysis()
    return m.temp_size_in_bytes, m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes


def best_time(attend, t, repeats: int) -> float:
    fn = compiled(attend, t)
    keys = jax.random.split(jax.random.key(0), 4)
    args = [jax.random.normal(key, (1, t, HEADS, HEAD_DIM), jnp.float32) for key in keys]
    return time_calls(lambda: fn(*args), repeats).best


def gib(n: float) -> str:
    return f"{n / 2**30:8.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768")
    parser.add_argument("--sparse-length", type=int, default=16384)
    parser.add_argument("--chunked-time-max", type=int, default=16384,
                        help="time chunked causal attention up to this T (memory: every T)")
    parser.add_argument("--dense-max-gib", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    print(machine_line())
    print(f"causal attention, forward + backward, batch 1, {HEADS} heads of {HEAD_DIM}, float32\n")

    print("1. Memory (GiB): XLA's temporaries for the jitted gradient (and with inputs/outputs)")
    kinds = {"dense": dense_causal, "chunked": chunked(),
             **{name: chunked(p) for name, p in PATTERNS.items()}}
    print(f"{'T':>7} " + " ".join(f"{k:>19}" for k in kinds))
    dense_fits = {}
    for t in lengths:
        row = []
        for name, attend in kinds.items():
            temp, total = memory(attend, t)
            if name == "dense":
                dense_fits[t] = temp <= args.dense_max_gib * 2**30
            row.append(f"{gib(temp)} ({gib(total)})")
        print(f"{t:>7} " + " ".join(row), flush=True)
    print("   bytes of temporaries per token: see the ratio of consecutive rows "
          "(dense x4 per doubling, chunked and block-sparse x2)\n")

    t = args.sparse_length
    print(f"2. Block-sparse vs dense with the same mask at T = {t} (dense one head at a time)")
    for name, pattern in PATTERNS.items():
        live = live_fraction(pattern, True, t)
        sparse_s = best_time(chunked(pattern), t, args.repeats)
        dense_s = best_time(dense_masked_by_head(pattern), t, 1)
        print(f"   {name:8} ({pattern.describe()}): live blocks {live:6.1%}; block-sparse "
              f"{sparse_s:7.2f} s, dense-with-mask {dense_s:7.2f} s: {dense_s / sparse_s:5.1f}x "
              f"faster", flush=True)
    print()

    print("3. Chunked causal attention vs dense causal attention (seconds, best of "
          f"{args.repeats}); dense only where its temporaries fit in {args.dense_max_gib:g} GiB")
    for t in lengths:
        if t > args.chunked_time_max:
            print(f"   T={t:>6}: not timed (--chunked-time-max)")
            continue
        chunked_s = best_time(chunked(), t, args.repeats if t <= 8192 else 1)
        if dense_fits.get(t):
            dense_s = best_time(dense_causal, t, args.repeats)
            print(f"   T={t:>6}: chunked {chunked_s:7.2f} s, dense {dense_s:7.2f} s: chunked / dense "
                  f"= {chunked_s / dense_s:.2f}", flush=True)
        else:
            print(f"   T={t:>6}: chunked {chunked_s:7.2f} s, dense does not fit", flush=True)


if __name__ == "__main__":
    main()
