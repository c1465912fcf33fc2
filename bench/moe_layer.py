"""How much slower is one mixture-of-experts sublayer than the dense feed-forward it replaces, with
each way of dispatching tokens to the experts?

Prints the figures of docs/performance.md, "Mixture of experts" (the rows of one sublayer); the
whole-model comparison is bench/moe.py.

    python -m bench.moe_layer [--repeats 50]

Forward + backward (gradients of the parameters and the input) at the Shakespeare CPU presets'
batch (12 x 64 tokens, d 128): the dense GELU feed-forward of width 512 against 8 experts of width
256, top-2, with capacity dispatch (training, capacity factor 1.0 as in the MoE preset, and 1.25,
Switch's) and with dropless dispatch (`jax.lax.ragged_dot`). Prints the median time of each (ms)
after one untimed call that compiles it, and the ratio to dense.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import machine_line, time_calls
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.moe import MoE

B, T, D = 12, 64, 128


def fwd_bwd(module, is_moe: bool):
    graphdef, params = nnx.split(module)

    def loss(params, x):
        m = nnx.merge(graphdef, params)
        if is_moe:
            y, aux, _ = m(x, training=True)
            return jnp.sum(y ** 2) + sum(aux.values())
        return jnp.sum(m(x) ** 2)

    return params, jax.jit(jax.grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls; the median counts")
    args = parser.parse_args()
    print(machine_line())
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    layers = {"dense feed-forward 512": (FeedForward(D, 512, activation="gelu", use_bias=False,
                                                     rngs=nnx.Rngs(0)), False)}
    for name, options in {"capacity (capacity factor 1.0)": dict(capacity_factor=1.0),
                          "capacity (capacity factor 1.25)": dict(capacity_factor=1.25),
                          "dropless": dict(dispatch="dropless")}.items():
        options = {"dispatch": "capacity", **options}
        layers[f"MoE 8x256 top-2 {name}"] = (MoE(D, 256, 8, top_k=2, activation="gelu", **options,
                                                 rngs=nnx.Rngs(0)), True)
    dense = None
    for name, (module, is_moe) in layers.items():
        params, fn = fwd_bwd(module, is_moe)
        seconds = time_calls(functools.partial(fn, params, x), args.repeats, warmup=1).median
        dense = dense or seconds
        print(f"{name}: forward + backward {seconds * 1e3:.2f} ms ({seconds / dense:.2f}x dense)",
              flush=True)


if __name__ == "__main__":
    main()
