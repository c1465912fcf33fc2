"""At training shapes on a CPU, is causal self-attention a block of queries at a time faster than
dense attention with a causal mask?

Prints the figures of docs/performance.md, "Attention" (the table of blocked against dense).

    python -m bench.causal_attention [--rounds 15] [--block N]

`blocked_causal_attention` (what `attention_impl=xla` runs on a CPU: query blocks against only the
keys they can see, heads-major products) against `jax.nn.dot_product_attention` with its causal
mask, forward + backward, float32, on the shapes of the Shakespeare preset (12 x 64 tokens, 4
heads of 32), BERT's and GPT-2's training batches (8 x 128 and 4 x 256 tokens, 12 heads of 64) and
longer rows. Both are compiled first; the rounds alternate them (each timed call after an untimed
one) and the median of each is printed with the ratio and the largest difference of their
outputs. `--block` times another query-block size than the default (`causal_query_block`).
"""

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp

from bench.common import machine_line, same_allocator, time_calls
from jaxformer.nn.attention_ops import blocked_causal_attention, causal_query_block, xla_attention

SHAPES = [(12, 64, 4, 32), (8, 128, 12, 64), (4, 256, 12, 64), (2, 512, 12, 64), (1, 1024, 12, 64)]


def gradient(attend, scale):
    def loss(q, k, v, w):
        return jnp.sum(attend(q, k, v, scale) * w)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def dense(q, k, v, scale):  # what `xla` runs off a CPU: jax.nn.dot_product_attention
    return xla_attention(q, k, v, scale=scale, is_causal=True)


def blocked(block):
    return lambda q, k, v, scale: blocked_causal_attention(q, k, v, scale=scale, block=block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=int, default=None, help="queries per block (default: "
                        "causal_query_block(tokens))")
    args = parser.parse_args()
    allocator = same_allocator()
    print(machine_line())
    print(allocator)
    print("causal self-attention, forward + backward, float32, median of "
          f"{args.rounds} alternating rounds (ms)\n")
    print("| batch x tokens, heads x dim | query block | dense (jax.nn) | blocked | dense / blocked "
          "| max output difference |")
    print("|---|---|---|---|---|---|")
    for batch, time_, heads, head_dim in SHAPES:
        keys = jax.random.split(jax.random.key(0), 4)
        data = [jax.random.normal(key, (batch, time_, heads, head_dim), jnp.float32) for key in keys]
        scale = head_dim ** -0.5
        block = args.block or causal_query_block(time_)
        fns = {"dense": gradient(dense, scale), "blocked": gradient(blocked(block), scale)}
        times = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                times[name].append(time_calls(functools.partial(fn, *data), warmup=1).median)
        d, b = (statistics.median(times[n]) * 1e3 for n in ("dense", "blocked"))
        diff = float(jnp.abs(dense(*data[:3], scale) - blocked(block)(*data[:3], scale)).max())
        print(f"| {batch} x {time_}, {heads} x {head_dim} | {block} | {d:.2f} "
              f"| {b:.2f} | {d / b:.2f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
