"""The train state: a plain pytree of arrays, created by a pure function.

`init_train_state(config, rng)` builds the model (through the family registry) from `rng`, splits
its variables into the trainable ones (`train.trainable`) and the frozen rest, and initializes the
optimizer on the trainable ones only. Being pure, it can run under `jax.jit` (with
`out_shardings` for a mesh: see `jaxformer.parallel`) or `jax.eval_shape` (abstract targets for
checkpoint restore). The model's structure (its `nnx.GraphDef`) is static and lives outside.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxformer.config import Config
from jaxformer.errors import ConfigError
from jaxformer.finetune.rewrite import apply_finetune
from jaxformer.finetune.trainable import trainable_filter
from jaxformer.models import build_model
from jaxformer.train.optimizer import make_optimizer


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 []: optimizer updates so far
    params: nnx.State  # the trainable variables; leaves carry logical-axis metadata
    frozen: nnx.State  # every other variable of the model (empty when everything trains)
    opt_state: optax.OptState  # for `params` only
    rng: jax.Array  # uint32 [2]: dropout key of micro-batch m is fold_in(rng, m), so resume is exact


def split_model(model: nnx.Module, config: Config):
    """(graphdef, trainable state, frozen state) of a model, as the run's filter divides it."""
    return nnx.split(model, trainable_filter(config.train.trainable), ...)


def build_run_model(config: Config, rng: jax.Array, base: nnx.State | None = None) -> nnx.Module:
    """The run's model: the family's (random, with `base`'s weights where it has them: a part of
    the plain model's state), rewritten as `config.finetune` says (LoRA, a quantized base, a soft prompt; see
    `jaxformer.finetune`)."""
    rngs = nnx.Rngs(params=rng)
    if base is None:
        model = build_model(config.model, rngs=rngs)
    else:
        # The parameters `base` lacks start from a key of their own, so that the rewrite below
        # (LoRA's initialisation) draws the same numbers however much of the model `base` fills.
        model = build_model(config.model, rngs=nnx.Rngs(params=jax.random.fold_in(rng, 1)))
        nnx.update(model, base)
    return apply_finetune(model, config, rngs)


def model_graphdef(config: Config) -> nnx.GraphDef:
    """The static structure to `nnx.merge(graphdef, params, frozen)`; nothing is allocated."""
    graphdef, _, _ = split_model(
        nnx.eval_shape(lambda: build_run_model(config, jax.random.PRNGKey(0))), config)
    return graphdef


def init_train_state(config: Config, rng: jax.Array, base: nnx.State | None = None) -> TrainState:
    """rng: a raw uint32 [2] key (`jax.random.PRNGKey(seed)`). Pure: same rng, same state.
    base: plain-model weights to start from, all or some (`jaxformer.train.warm_start`)."""
    init_rng, dropout_rng = jax.random.split(rng)
    _, params, frozen = split_model(build_run_model(config, init_rng, base), config)
    if not jax.tree.leaves(params):
        raise ConfigError(f"train.trainable={list(config.train.trainable)} selects none of the "
                          f"model's variables: nothing would train")
    tx = make_optimizer(config.optimizer)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                      opt_state=tx.init(params), rng=dropout_rng)


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
