"""The library's real programs, lowered and compiled for a mesh of (possibly compile-only) devices.

Nothing is allocated: the train state and batches are `jax.ShapeDtypeStruct`s carrying the
shardings a run would give them (`jaxformer.parallel`), and the functions lowered are the ones a
run calls:

- train: `train.step.make_train_step` (optimizer, gradient accumulation, donated state);
- eval: `train.eval.make_eval_step`;
- generate: `generate.loop.make_decode_fn` (prefill + `lax.scan` decode loop over a KV cache).
"""

import dataclasses
import functools
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxformer.compile.topology import GiB
from jaxformer.config import Config
from jaxformer.errors import UserError
from jaxformer.generate.loop import DecodeSettings, make_decode_fn
from jaxformer.models import abstract_model
from jaxformer.nn.sharding import logical_to_spec
from jaxformer.parallel import ParallelPlan
from jaxformer.parallel.batch import batch_sharding
from jaxformer.parallel.state import named_shardings, with_shardings
from jaxformer.tasks import make_task
from jaxformer.train.eval import make_eval_step
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.run_dir import RunDir
from jaxformer.train.state import init_train_state, model_graphdef
from jaxformer.train.step import make_train_step

PROGRAMS = ("train", "eval", "generate")


@dataclasses.dataclass
class Program:
    """A compiled program and what the report needs to read it."""

    kind: str  # train | eval | generate
    lowered: jax.stages.Lowered
    compiled: jax.stages.Compiled
    parameters: object  # abstract model variables (sharded ShapeDtypeStructs)
    optimizer: object  # abstract optimizer state, or None
    tokens: int  # tokens one call processes (train: trained on; generate: new tokens)
    sequences: int  # rows of the batch
    config: Config  # as compiled (a task may have set the vocabulary from its tokenizer)


def _spec_over_batch(mesh, rules, shape) -> NamedSharding:
    logical = ("batch",) + (None,) * (len(shape) - 1)
    return NamedSharding(mesh, logical_to_spec(logical, shape, rules, dict(mesh.shape)))


def _batch(task, config: Config, plan: ParallelPlan, *, stacked: bool = True) -> dict:
    """The abstract batch of one call: for a train step (`stacked`), accumulation's micro-batches
    and `steps_per_call` stacked ahead of the rows, as the loop stacks them."""
    accum, steps = config.optimizer.grad_accum_steps, config.train.steps_per_call
    leading = ((steps,) * (steps > 1) + (accum,) * (accum > 1)) if stacked else ()
    out = {}
    for name, spec in task.batch_spec(config.train.batch_size).items():
        shape = leading + tuple(spec.shape)
        sharding = batch_sharding(plan.mesh, plan.rules, shape, len(leading))
        out[name] = jax.ShapeDtypeStruct(shape, spec.dtype, sharding=sharding)
    return out


def prepared_task(config: Config):
    """(config, task) with what the task's batches need. A language model's batch needs nothing
    but the config; tasks whose batch shapes come from their data (caption lengths, a source's
    lengths) read it first, in a throwaway run directory, and may set the vocabulary from the
    tokenizer as a run would."""
    task = make_task(config)
    try:
        task.batch_spec(config.train.batch_size)
        return config, task
    except AttributeError:
        pass
    with tempfile.TemporaryDirectory(prefix="jaxformer-compile-") as tmp:
        config = task.prepare(RunDir(Path(tmp)), lambda message: None)
    return config, task


def _abstract_state(config: Config, plan: ParallelPlan):
    """The run's train state as sharded ShapeDtypeStructs: what the loop would create. Called
    outside the mesh's context: the seed's key is made on the host, not on compile-only chips."""
    return plan.abstract(functools.partial(init_train_state, config, jax.random.PRNGKey(0)))


class StateExceedsChip(Exception):
    """The train state (parameters and optimizer moments) one chip would hold is larger than its
    HBM: the program cannot fit, and compiling it would only say so later."""

    def __init__(self, state_bytes: int):
        super().__init__(f"parameters and optimizer state alone need {state_bytes / GiB:.1f} GiB "
                         "a chip")
        self.state_bytes = state_bytes


def compile_train(config: Config, plan: ParallelPlan, *, hbm_bytes: int | None = None) -> Program:
    """The train step compiled for `plan`'s devices; with `hbm_bytes`, StateExceedsChip before
    compiling when the state alone is larger."""
    config, task = prepared_task(config)
    state = _abstract_state(config, plan)
    if hbm_bytes is not None and shard_bytes(state) > hbm_bytes:
        raise StateExceedsChip(shard_bytes(state))
    with plan.context():
        shardings = jax.tree.map(lambda a: a.sharding, state)
        step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                               task, state_shardings=shardings)
        batch = _batch(task, config, plan)
        lowered = step.lower(state, batch)
        compiled = lowered.compile()
    parameters = {"params": state.params, "frozen": state.frozen}
    calls = config.train.steps_per_call * config.optimizer.grad_accum_steps
    return Program("train", lowered, compiled, parameters, state.opt_state,
                   tokens=task.tokens_per_batch(config.train.batch_size) * calls,
                   sequences=config.train.batch_size * calls, config=config)


def compile_eval(config: Config, plan: ParallelPlan) -> Program:
    config, task = prepared_task(config)
    state = _abstract_state(config, plan)
    with plan.context():
        batch = _batch(task, config, plan, stacked=False)
        lowered = make_eval_step(model_graphdef(config), task).lower(state.params, state.frozen, batch)
        compiled = lowered.compile()
    return Program("eval", lowered, compiled, {"params": state.params, "frozen": state.frozen},
                   None, tokens=task.tokens_per_batch(config.train.batch_size),
                   sequences=config.train.batch_size, config=config)


def _prompts(model_config, batch: int, prompt: int) -> tuple[tuple[int, ...], type]:
    """Shape and dtype of a batch of prompts, by what the model's encoder reads."""
    if model_config.encoder_input == "images":
        enc = model_config.encoder
        return (batch, enc.image_size, enc.image_size, enc.num_channels), jnp.float32
    if model_config.encoder_input == "features":
        return (batch, model_config.num_mel_bins, model_config.num_frames), jnp.float32
    return (batch, prompt), jnp.int32


def compile_generate(config: Config, plan: ParallelPlan, *, batch_size: int | None = None,
                     prompt_len: int | None = None, new_tokens: int | None = None) -> Program:
    """The decoding program for `batch_size` prompts (default: train.batch_size) of `prompt_len`
    tokens (default: half of train.seq_len) and `new_tokens` new ones (default: the rest of
    train.seq_len), sampled at temperature 1."""
    model_config = config.model
    model = abstract_model(model_config)
    if not hasattr(model, "init_cache"):
        raise UserError(f"the {model_config.family} family has no decoding loop: compile "
                        f"--program train or eval")
    seq_len = min(config.train.seq_len, model_config.max_seq_len)
    batch = batch_size or config.train.batch_size
    prompt = prompt_len or max(1, seq_len // 2)
    new = new_tokens or max(1, seq_len - prompt)
    graphdef, abstract_vars = nnx.split(model)
    with plan.context():
        state = with_shardings(abstract_vars, named_shardings(abstract_vars, plan.mesh, plan.rules))
        settings = DecodeSettings(max_new_tokens=new, temperature=1.0)
        shape, dtype = _prompts(model_config, batch, prompt)
        tokens = jax.ShapeDtypeStruct(shape, dtype,
                                      sharding=_spec_over_batch(plan.mesh, plan.rules, shape))
        rows = _spec_over_batch(plan.mesh, plan.rules, (batch,))
        lengths = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=rows)
        keys = jax.eval_shape(lambda: jax.vmap(jax.random.key)(jnp.zeros((batch,), jnp.uint32)))
        rngs = jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=rows)
        scalar = jax.ShapeDtypeStruct((), jnp.float32,
                                      sharding=NamedSharding(plan.mesh, PartitionSpec()))
        decode = make_decode_fn(graphdef, settings, ordered_callbacks=False)
        lowered = jax.jit(decode).lower(state, tokens, lengths, rngs, scalar, scalar)
        compiled = lowered.compile()
    return Program("generate", lowered, compiled, {"params": state}, None, tokens=batch * new,
                   sequences=batch, config=config)


def compile_program(kind: str, config: Config, plan: ParallelPlan, **options) -> Program:
    if kind not in PROGRAMS:
        raise UserError(f"--program {kind}: use one of {', '.join(PROGRAMS)}")
    build = {"train": compile_train, "eval": compile_eval, "generate": compile_generate}[kind]
    # An executable for compile-only devices cannot be loaded back from JAX's persistent cache
    # (it has no client to load onto), so it is kept out of it.
    cached = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        return build(config, plan, **options)
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)


def shard_bytes(tree) -> int:
    """Bytes one device holds of an abstract tree's arrays (each leaf's shard shape)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
    return total
