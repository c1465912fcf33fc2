"""Benchmark: one mixture-of-experts sublayer against the dense feed-forward it replaces.

    PYTHONPATH=. python bench/moe_layer.py

Forward + backward (gradients of the parameters and the input) at the Shakespeare CPU presets'
batch (12 x 64 tokens, d 128): the dense GELU feed-forward of width 512 against 8 experts of width
256, top-2, with capacity dispatch (training, capacity factor 1.0 as in the MoE preset, and
1.25, Switch's) and with dropless dispatch
(`jax.lax.ragged_dot`). Prints the median time of each (ms) and the ratio to dense; the
whole-model comparison is bench/moe.py.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, median_time  # noqa: E402

from jaxformer.nn.feedforward import FeedForward  # noqa: E402
from jaxformer.nn.moe import MoE  # noqa: E402

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


if __name__ == "__main__":
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
        jax.block_until_ready(fn(params, x))  # compile
        seconds, _ = median_time(lambda: jax.block_until_ready(fn(params, x)), 50)
        dense = dense or seconds
        print(f"{name}: forward + backward {seconds * 1e3:.2f} ms ({seconds / dense:.2f}x dense)",
              flush=True)
