"""Dynamic loss scaling for float16 training (Micikevicius et al. 2018, "Mixed Precision Training").

float16 gradients underflow below ~6e-8; multiplying the loss by a large scale S keeps them
representable, and the update divides by S again. S starts high and adapts: a step whose
gradients overflow (inf / NaN) is skipped and S halves; after `period` good steps in a row S
doubles. bfloat16 has float32's range and needs none of this.

    optimizer.loss_scale=dynamic        (with model.dtype=float16)

`dynamic_loss_scale()` is an optax transformation placed first in the chain: it unscales the
gradients and updates S; the rest of the chain runs under `optax.apply_if_finite`, so a skipped
step leaves the parameters and the AdamW moments untouched. The train step reads S with
`current_scale(opt_state)` and differentiates S * loss.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LossScaleState(NamedTuple):
    scale: jax.Array  # float32 []: the current S
    good_steps: jax.Array  # int32 []: finite steps since S last changed


def dynamic_loss_scale(init_scale: float = 2.0 ** 15, period: int = 2000, factor: float = 2.0,
                       min_scale: float = 1.0) -> optax.GradientTransformation:
    def init(params):
        del params
        return LossScaleState(jnp.asarray(init_scale, jnp.float32), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        del params
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        grads = jax.tree.map(lambda g: (g / state.scale).astype(g.dtype), grads)
        grow = state.good_steps + 1 >= period
        scale = jnp.where(finite, jnp.where(grow, state.scale * factor, state.scale),
                          jnp.maximum(state.scale / factor, min_scale))
        good = jnp.where(finite & ~grow, state.good_steps + 1, 0).astype(jnp.int32)
        return grads, LossScaleState(scale.astype(jnp.float32), good)

    return optax.GradientTransformation(init, update)


def with_loss_scale(tx: optax.GradientTransformation, **kwargs) -> optax.GradientTransformation:
    """`tx` behind dynamic loss scaling: skipped (state kept) whenever the gradients overflow."""
    return optax.chain(dynamic_loss_scale(**kwargs),
                       optax.apply_if_finite(tx, max_consecutive_errors=2 ** 30))


def current_scale(opt_state) -> jax.Array:
    """S from an optimizer state built with `with_loss_scale` (1.0 when there is none)."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, LossScaleState))
             if isinstance(s, LossScaleState)]
    return found[0].scale if found else jnp.float32(1.0)
