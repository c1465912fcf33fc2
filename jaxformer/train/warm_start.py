"""`train.init_from`: start a fresh run from another model's weights (fine-tuning).

The source is a `jaxformer train` run directory (its latest checkpoint) or a HuggingFace model
directory. Every parameter of the new model whose path also exists in the source gets the
source's values (trainable and frozen alike); the others keep their fresh initialisation (a new
classifier), and the source's extra parameters are left out (a pretraining head). A path present
in both with different shapes is an error: the model sizes must match the source's. The optimizer
state is untouched: AdamW's moments start at zero whatever the weights.

Only a run's first start uses it; a resumed run continues from its own checkpoint.
"""

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxformer.errors import UserError
from jaxformer.interop import hf
from jaxformer.train.run_dir import load_run


def source_params(source: str | Path) -> dict[tuple, np.ndarray]:
    """{parameter path: array} of a run directory's latest checkpoint or an HF directory."""
    path = Path(source).expanduser()
    if (path / "config.yaml").is_file():
        _, model, _ = load_run(path, log=lambda _: None)
    elif (path / "config.json").is_file():
        _, model = hf.load(path)
    else:
        raise UserError(f"train.init_from={str(source)!r} is neither a run directory (config.yaml) "
                        f"nor a HuggingFace model directory (config.json)")
    return {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _fill(state: nnx.State, params: dict, used: set, fresh: list) -> nnx.State:
    filled = []
    for path, variable in nnx.to_flat_state(state):
        value = variable.get_value()
        if isinstance(variable, nnx.Param) and path in params:
            new = params[path]
            if new.shape != value.shape:
                name = "/".join(map(str, path))
                raise UserError(f"train.init_from: {name} has shape {list(new.shape)} there but "
                                f"{list(value.shape)} here: give the model the source's sizes")
            value = jax.device_put(np.asarray(new, value.dtype), value.sharding)
            used.add(path)
        elif isinstance(variable, nnx.Param):
            fresh.append("/".join(map(str, path)))
        filled.append((path, variable.replace(value)))
    return nnx.from_flat_state(filled)


def warm_start(state, source: str | Path, say):
    """`state` (a fresh TrainState) with its parameters taken from `source` where they exist."""
    params = source_params(source)
    used: set = set()
    fresh: list[str] = []
    new_params = _fill(state.params, params, used, fresh)
    new_frozen = _fill(state.frozen, params, used, fresh)
    if not used:
        raise UserError(f"train.init_from={str(source)!r} shares no parameter with this model: is "
                        f"it a model of the same family?")
    unused = sorted({"/".join(map(str, p[:2])) for p in params if p not in used})
    say(f"initialised {len(used)} parameter arrays from {source}"
        + (f"; fresh: {', '.join(fresh)}" if fresh else "")
        + (f"; not used: {', '.join(unused)}" if unused else ""))
    return state.replace(params=new_params, frozen=new_frozen)
