"""Creating parameters that carry logical axis names.

Every parameter in jaxformer is an `nnx.Param` whose `out_sharding` metadata holds *logical* axis
names ("embed", "mlp", "heads", ...). Model code never names a mesh: the parallel layer maps these
names to mesh axes with rules. Eager sharding is switched off per parameter so a model can be built
with no mesh at all (a laptop, a test); sharded creation happens in `jaxformer.parallel`.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def param(
    key: jax.Array,
    init: Initializer,
    shape: Sequence[int],
    axes: Sequence[str | None],
    dtype: jnp.dtype = jnp.float32,
) -> nnx.Param:
    """A parameter of `shape` drawn from `init`, annotated with one logical name per axis."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    return nnx.Param(init(key, tuple(shape), dtype), out_sharding=tuple(axes), eager_sharding=False)


def path_string(path) -> str:
    """A pytree path (or an NNX state path) as "layers/0/attention/query/kernel"."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def normal(std: float) -> Initializer:
    return jax.nn.initializers.normal(stddev=std)


zeros: Initializer = jax.nn.initializers.zeros
ones: Initializer = jax.nn.initializers.ones
