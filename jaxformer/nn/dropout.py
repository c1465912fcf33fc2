"""Inverted dropout driven by an explicit key: no key means evaluation (identity).

An explicit key rather than a stateful RNG keeps the train step a pure function of its inputs.
"""

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
