"""Starting a run from a base model's weights (`finetune.base`): a HuggingFace directory or a
jaxformer run directory.

The base's weights are read on the host into the plain model's layout (an unrolled or scanned
stack as the run's model config says), checked against that layout, and handed as an argument
to the jit-compiled, sharded creation of the train state, which then applies the run's rewrite
(LoRA, a quantized base, a soft prompt) on top of them. A base run that was itself fine-tuned
gives its plain equivalent (adapters merged, soft prompt dropped).
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

from jaxformer.errors import ConfigError
from jaxformer.finetune.adapters import save_adapter
from jaxformer.finetune.rewrite import unload
from jaxformer.interop import hf
from jaxformer.models import abstract_model
from jaxformer.models.layers import stack_layers
from jaxformer.parallel.state import named_shardings
from jaxformer.train.run_dir import load_run
from jaxformer.train.state import init_train_state

# Model-config fields that do not change what a parameter holds: a base may differ in them.
FREE_FIELDS = ("dropout", "remat", "attention_impl", "dtype", "param_dtype", "scan_layers")
# Fields that only set a derived size (None: the default rule): a base may spell the size
# differently (an HF import writes mlp_dim=3072 where a preset leaves it None) if it agrees.
DERIVED = {"mlp_dim": "ffn_dim", "mlp_ratio": "ffn_dim", "head_dim": "head_size",
           "num_kv_heads": "kv_heads"}


def base_kind(path: str | Path) -> str:
    """"run" (config.yaml), "hf" (config.json) or a ConfigError saying what the path lacks."""
    path = Path(path)
    if (path / "config.yaml").exists():
        return "run"
    if (path / "config.json").exists():
        return "hf"
    raise ConfigError(f"finetune.base={str(path)!r} is neither a jaxformer run directory (with "
                      f"config.yaml) nor a HuggingFace model directory (with config.json)")


def _check_same_model(base_config, config, where: str) -> None:
    if type(base_config) is not type(config):
        raise ConfigError(f"finetune.base {where} holds a {base_config.family} model, the run "
                          f"builds a {config.family} model")
    def same(name: str) -> bool:
        if getattr(base_config, name) == getattr(config, name):
            return True
        derived = DERIVED.get(name)
        return (derived is not None and hasattr(config, derived)
                and getattr(base_config, derived) == getattr(config, derived))

    differ = [f.name for f in dataclasses.fields(config)
              if f.name not in FREE_FIELDS and not same(f.name)]
    if differ:
        shown = ", ".join(f"model.{n}={getattr(base_config, n)!r} (run: {getattr(config, n)!r})"
                          for n in differ[:4])
        raise ConfigError(f"finetune.base {where} was built with {shown}: set the run's model "
                          f"section to the base's")


def _plain_params(model) -> dict[tuple, np.ndarray]:
    state = nnx.state(unload(model), nnx.Param)
    return {path: np.asarray(jax.device_get(v.get_value())) for path, v in nnx.to_flat_state(state)}


def read_base(path: str | Path, model_config) -> dict[tuple, np.ndarray]:
    """The base's parameters in the per-layer layout {("layers", 0, ..., "kernel"): array}."""
    path = Path(path)
    if base_kind(path) == "hf":
        base_config = hf.config_from_hf(hf.read_config(path))
        _check_same_model(base_config.replace(vocab_pad_multiple=model_config.vocab_pad_multiple)
                          if hasattr(base_config, "vocab_pad_multiple") else base_config,
                          model_config, f"{path}")
        unrolled = (model_config.replace(scan_layers=False)
                    if getattr(model_config, "scan_layers", False) else model_config)
        return hf.load_params(path, unrolled)
    base_run, model, _ = load_run(path, log=lambda *_: None)
    _check_same_model(base_run.model, model_config, f"{path}")
    params = _plain_params(model)
    if getattr(base_run.model, "scan_layers", False):  # [num_layers, ...] -> one entry per layer
        params = {**{k: v for k, v in params.items() if k[0] != "layers"},
                  **{("layers", i, *k[1:]): v[i] for k, v in params.items() if k[0] == "layers"
                     for i in range(v.shape[0])}}
    return params


def base_state(path: str | Path, model_config) -> nnx.State:
    """The base's weights as the `nnx.State` of the plain model `model_config` builds (scanned
    if it says so), cast to its parameter dtype; a ConfigError names any mismatch."""
    params = read_base(path, model_config)
    _, abstract = nnx.split(abstract_model(model_config.replace(scan_layers=False)
                                           if getattr(model_config, "scan_layers", False)
                                           else model_config))
    filled = []
    for key, variable in nnx.to_flat_state(abstract):
        name = "/".join(map(str, key))
        if not isinstance(variable, nnx.Param):
            raise ConfigError(f"the model's variable {name} is not a parameter; a base cannot fill it")
        if key not in params:
            raise ConfigError(f"finetune.base {path} has no weights for {name}")
        array = params.pop(key)
        want = variable.get_value()
        if tuple(array.shape) != tuple(want.shape):
            raise ConfigError(f"finetune.base {path}: {name} has shape {tuple(array.shape)}, the "
                              f"run's model needs {tuple(want.shape)}")
        filled.append((key, variable.replace(np.asarray(array, dtype=want.dtype))))
    if params:
        extra = "/".join(map(str, sorted(params, key=str)[0]))
        raise ConfigError(f"finetune.base {path} holds weights the run's model lacks ({extra}, "
                          f"{len(params)} in all)")
    state = nnx.from_flat_state(filled)
    return stack_layers(state) if getattr(model_config, "scan_layers", False) else state


def create_from_base(config, plan):
    """The fresh train state of `config`, its model holding `finetune.base`'s weights, created
    sharded on `plan`'s mesh (the base's arrays are an argument of the compiled creation)."""
    base = base_state(config.finetune.base, config.model)
    init = functools.partial(init_train_state, config, jax.random.PRNGKey(config.train.seed))
    abstract = jax.eval_shape(lambda b: init(base=b), base)
    shardings = named_shardings(abstract, plan.mesh, plan.rules)
    with plan.context():
        return jax.jit(lambda b: init(base=b), out_shardings=shardings)(base)


def prepare_run_dir(config, run) -> None:
    """Before the task prepares its data: a run fine-tuning a jaxformer run encodes text with
    the base run's tokenizer (a copy in its own run directory)."""
    base = config.finetune.base
    if not base or base_kind(base) != "run" or run.tokenizer.exists():
        return
    source = Path(base) / "tokenizer"
    if not source.exists():
        return
    run.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run.root, prefix=".tokenizer-"))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    try:
        os.rename(staging, run.tokenizer)  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def finish_run(model, config, run, say) -> None:
    """After training: a LoRA run writes its adapter alone, in peft's layout, to `adapter/`."""
    if config.finetune.mode != "lora" or jax.process_index() != 0:
        return
    target = run.root / "adapter"
    save_adapter(target, model, config.model, overwrite=True,
                 base_model=str(config.finetune.base or ""))
    say(f"LoRA adapter (peft layout): {target}")
