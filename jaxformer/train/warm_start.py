"""Starting a run from other weights: `finetune.base` and `train.init_from` take one path.

Either key names a source: a `jaxformer train` run directory (its latest checkpoint; its
tokenizer is copied into the new run, which then encodes text as the source did) or a
HuggingFace model directory (config.json + safetensors). Setting both is an error. One set of
rules matches the source to the run's model:

- the source is read as its plain model's parameters, one entry per layer: a fine-tuned run
  gives its plain equivalent (adapters merged, base dequantized, soft prompt dropped), a scanned
  stack is split into its layers; it must be of the run's model family;
- its parameters fill the run's plain model (before the `finetune` rewrite) by path; a path in
  both must have one shape in both (an error naming the model fields in which the two differ);
- a parameter of the run that the source lacks starts fresh if the run trains it (a new
  classifier) and is an error if the run freezes it (LoRA on a base must not sit on random
  weights); parameters of the source that the run lacks are left out (a pretraining head);
  both are listed in the run's log; a source sharing no parameter is an error.

The weights are cast to the run's parameter dtype on the host and handed as an argument to the
jit-compiled, sharded creation of the train state, which applies the run's rewrite (LoRA, a
quantized base, a soft prompt) on top of them; the optimizer state starts afresh. Only a run's
first start reads the source: a resumed run continues from its own checkpoint.
"""

import dataclasses
import functools
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxformer.config import Config
from jaxformer.errors import ConfigError
from jaxformer.finetune.rewrite import unload
from jaxformer.finetune.trainable import trainable_filter
from jaxformer.interop import hf
from jaxformer.models import abstract_model, build_model
from jaxformer.models.layers import unstack_all_layers
from jaxformer.parallel.state import named_shardings
from jaxformer.train.run_dir import load_run
from jaxformer.train.state import init_train_state

# Model-config fields that do not change what a parameter holds.
FREE_FIELDS = ("dropout", "remat", "attention_impl", "dtype", "param_dtype", "scan_layers")
# Fields that only set a derived size (None: the default rule): a source may spell the size
# differently (an HF import writes mlp_dim=3072 where a preset leaves it None) if it agrees.
DERIVED = {"mlp_dim": "ffn_dim", "mlp_ratio": "ffn_dim", "head_dim": "head_size",
           "num_kv_heads": "kv_heads"}


@dataclasses.dataclass(frozen=True)
class Source:
    key: str  # the config key that names it: "finetune.base" or "train.init_from"
    path: Path
    kind: str  # "run" (config.yaml) or "hf" (config.json)

    def __str__(self) -> str:
        return f"{self.key}={str(self.path)!r}"


def warm_start_source(config: Config) -> Source | None:
    """The source the run starts from, or None; a ConfigError for both keys at once or for a
    directory that is neither a run nor an HF model."""
    named = [(key, value) for key, value in (("finetune.base", config.finetune.base),
                                              ("train.init_from", config.train.init_from)) if value]
    if not named:
        return None
    if len(named) > 1:
        raise ConfigError("finetune.base and train.init_from both name weights to start from: "
                          "keep one (they take the same path)")
    key, value = named[0]
    path = Path(value).expanduser()
    if (path / "config.yaml").is_file():
        return Source(key, path, "run")
    if (path / "config.json").is_file():
        return Source(key, path, "hf")
    raise ConfigError(f"{key}={value!r} is neither a jaxformer run directory (with config.yaml) "
                      f"nor a HuggingFace model directory (with config.json)")


def model_differences(source_config, config) -> list[str]:
    """The fields in which two model configs differ, as "model.x=source (run: run's)"."""
    if type(source_config) is not type(config):
        return [f"model.family={source_config.family!r} (run: {config.family!r})"]

    def same(name: str) -> bool:
        if getattr(source_config, name) == getattr(config, name):
            return True
        derived = DERIVED.get(name)
        return (derived is not None and hasattr(config, derived)
                and getattr(source_config, derived) == getattr(config, derived))

    return [f"model.{f.name}={getattr(source_config, f.name)!r} (run: {getattr(config, f.name)!r})"
            for f in dataclasses.fields(config) if f.name not in FREE_FIELDS and not same(f.name)]


def read_source(source: Source, model_config) -> tuple[object, dict[tuple, np.ndarray]]:
    """(the source's model config, its plain parameters {("layers", 0, ..., "kernel"): array})."""
    if source.kind == "hf":
        source_config = hf.config_from_hf(hf.read_config(source.path))
        layout = {name: getattr(model_config, name) for name in ("vocab_pad_multiple", "param_dtype")
                  if hasattr(source_config, name)}  # how the run stores weights, not what they are
        source_config = source_config.replace(**layout)
        unrolled = (source_config.replace(scan_layers=False)
                    if getattr(source_config, "scan_layers", False) else source_config)
        return source_config, hf.load_params(source.path, unrolled)
    run_config, model, _ = load_run(source.path, log=lambda *_: None)
    state = nnx.state(unload(model), nnx.Param)
    if getattr(run_config.model, "scan_layers", False):
        state = unstack_all_layers(state)
    return run_config.model, {path: np.asarray(jax.device_get(v.get_value()))
                              for path, v in nnx.to_flat_state(state)}


def _plain_abstract(model_config) -> nnx.Module:
    unrolled = (model_config.replace(scan_layers=False)
                if getattr(model_config, "scan_layers", False) else model_config)
    return abstract_model(unrolled)


def _stack_scanned(filled: dict, abstract: nnx.State, source: Source) -> dict:
    """Per-layer entries -> the scanned model's stacked ones ([num_layers, ...] at "layers")."""
    out = {path: value for path, value in filled.items() if "layers" not in path[:-1]}
    for path, variable in nnx.to_flat_state(abstract):
        if "layers" not in path[:-1]:
            continue
        at = path.index("layers") + 1
        count = variable.get_value().shape[0]
        layers = [filled.get(path[:at] + (i,) + path[at:]) for i in range(count)]
        if all(x is not None for x in layers):
            out[path] = np.stack(layers)
        elif any(x is not None for x in layers):
            raise ConfigError(f"{source}: {'/'.join(map(str, path))} is there for some layers "
                              f"only; a scanned stack takes all or none: set "
                              f"model.scan_layers=false")
    return out


def match_source(source: Source, config: Config, say=None) -> nnx.State:
    """The run's plain-model parameters that `source` fills, as an `nnx.State` (a part of the
    plain model's, scanned if the run is), by the rules of the module docstring."""
    source_config, params = read_source(source, config.model)
    differences = model_differences(source_config, config.model)
    if differences and differences[0].startswith("model.family="):
        raise ConfigError(f"{source} holds a {source_config.family} model; the run builds a "
                          f"{config.model.family} model")
    plain = _plain_abstract(config.model)
    _, trained, abstract = nnx.split(plain, trainable_filter(config.train.trainable), ...)
    trained = {path for path, _ in nnx.to_flat_state(trained)}
    abstract = nnx.state(plain)
    filled, fresh = {}, []
    for path, variable in nnx.to_flat_state(abstract):
        name = "/".join(map(str, path))
        if not isinstance(variable, nnx.Param):
            continue
        if path not in params:
            if path not in trained:
                raise ConfigError(f"{source} has no weights for {name}, which this run freezes "
                                  f"(train.trainable={list(config.train.trainable)})")
            fresh.append(name)
            continue
        array, want = params.pop(path), variable.get_value()
        if tuple(array.shape) != tuple(want.shape):
            shown = ", ".join(differences[:4]) or "no model field"
            raise ConfigError(f"{source}: {name} has shape {list(array.shape)} there, the run's "
                              f"model needs {list(want.shape)}; the source's model differs in "
                              f"{shown}: give the run's model section the source's sizes")
        filled[path] = np.asarray(array, dtype=want.dtype)
    if not filled:
        raise ConfigError(f"{source} shares no parameter with the run's model")
    if getattr(config.model, "scan_layers", False):
        abstract = nnx.state(abstract_model(config.model))
        filled = _stack_scanned(filled, abstract, source)
    if say is not None:
        unused = sorted({"/".join(map(str, p[:2])) for p in params})
        say(f"starting from the weights of {source.path} ({source.key}): {len(filled)} parameter "
            f"arrays" + (f"; fresh: {', '.join(fresh)}" if fresh else "")
            + (f"; not used: {', '.join(unused)}" if unused else ""))
    variables = dict(nnx.to_flat_state(abstract))
    return nnx.from_flat_state([(path, variables[path].replace(value))
                                for path, value in filled.items()])


def reference_model(config: Config, say=None) -> nnx.Module:
    """The plain model (the run's family and sizes, no LoRA or other rewrite) holding the
    warm-start source's weights, all of them: the frozen reference a task such as DPO compares
    the trained model with. A ConfigError when the run names no source or the source lacks some
    of the model's parameters."""
    source = warm_start_source(config)
    if source is None:
        raise ConfigError(f"task.name={config.task.name} compares the model with its starting "
                          f"weights: name them with train.init_from (a causal_lm run) or "
                          f"finetune.base")
    base = match_source(source, config, say)
    model = build_model(config.model, rngs=nnx.Rngs(0))
    wanted = {path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    missing = sorted("/".join(map(str, p)) for p in wanted - {p for p, _ in nnx.to_flat_state(base)})
    if missing:
        raise ConfigError(f"{source} has no weights for {', '.join(missing[:4])}: the reference "
                          f"model of task.name={config.task.name} must come whole from it")
    nnx.update(model, base)
    return model


def create_from_source(config: Config, plan, say=None):
    """The fresh train state of `config`, its model holding the warm-start source's weights,
    created sharded on `plan`'s mesh (the weights are an argument of the compiled creation)."""
    source = warm_start_source(config)
    if source is None:
        raise ConfigError("neither finetune.base nor train.init_from names weights to start from")
    base = match_source(source, config, say)
    init = functools.partial(init_train_state, config, jax.random.PRNGKey(config.train.seed))
    abstract = jax.eval_shape(lambda b: init(base=b), base)
    shardings = named_shardings(abstract, plan.mesh, plan.rules)
    with plan.context():
        return jax.jit(lambda b: init(base=b), out_shardings=shardings)(base)


def prepare_run_dir(config: Config, run) -> None:
    """Before the task prepares its data: a run starting from a jaxformer run encodes text with
    the source run's tokenizer (a copy in its own run directory)."""
    source = warm_start_source(config)
    if source is None or source.kind != "run" or run.tokenizer.exists():
        return
    tokenizer = source.path / "tokenizer"
    if not tokenizer.exists():
        return
    run.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run.root, prefix=".tokenizer-"))
    shutil.copytree(tokenizer, staging, dirs_exist_ok=True)
    try:
        os.rename(staging, run.tokenizer)  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
