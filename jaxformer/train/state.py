"""The train state: a plain pytree of arrays, created by a pure function.

`init_train_state(config, rng)` builds the model from `rng`, splits off its parameters and
initializes the optimizer. Being pure, it can run under `jax.jit` (with `out_shardings` for a
mesh: see `jaxformer.parallel`) or `jax.eval_shape` (abstract targets for checkpoint restore).
The model's structure (its `nnx.GraphDef`) is static and lives outside the state.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxformer.config import Config
from jaxformer.models.config import DecoderConfig
from jaxformer.models.decoder import DecoderLM
from jaxformer.train.optimizer import make_optimizer


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 []: train_step calls so far (micro-steps when accumulating)
    params: nnx.State  # the model's nnx.Param state; leaves carry logical-axis metadata
    opt_state: optax.OptState
    rng: jax.Array  # uint32 [2]: dropout key for step s is fold_in(rng, s), so resume is exact


def build_model(model_config: DecoderConfig, rng: jax.Array) -> DecoderLM:
    return DecoderLM(model_config, rngs=nnx.Rngs(params=rng))


def model_graphdef(model_config: DecoderConfig) -> nnx.GraphDef:
    """The static structure to `nnx.merge` parameters into; nothing is allocated."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(model_config, jax.random.key(0))),
                            nnx.Param)
    return graphdef


def init_train_state(config: Config, rng: jax.Array) -> TrainState:
    """rng: a raw uint32 [2] key (`jax.random.PRNGKey(seed)`). Pure: same rng, same state."""
    init_rng, dropout_rng = jax.random.split(rng)
    model = build_model(config.model, init_rng)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):  # the train step carries only Params through
        raise TypeError("the model holds state that is not an nnx.Param (e.g. a stateful RNG or "
                        "batch statistics), which the train step would drop: keep models "
                        "parameter-only and pass randomness as keys")
    tx = make_optimizer(config.optimizer)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=dropout_rng)


def abstract_train_state(config: Config) -> TrainState:
    """The state as `jax.ShapeDtypeStruct`s on the default device: a restore target there. The
    explicit sharding matters: without one, orbax would restore onto the saving run's devices,
    which a checkpoint written on a mesh does not have here. (`jaxformer.parallel` makes the
    targets for a mesh.)"""
    abstract = jax.eval_shape(functools.partial(init_train_state, config), jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)


def create_state(config: Config) -> TrainState:
    """A fresh state on the default device, from `config.train.seed`. The parallel layer replaces
    this with a jit that has `out_shardings` for the mesh."""
    return jax.jit(functools.partial(init_train_state, config))(jax.random.PRNGKey(config.train.seed))
