"""LoRA adapters on disk, alone (a few MB, not the model), in peft's layout:
`adapter_config.json` + `adapter_model.safetensors`.

    save_adapter("out/adapter", model, config.model)    # a model with adapters attached
    load_adapter(model, "out/adapter", config.model)    # onto the same base model
    weights = read_adapter("out/adapter", model, config.model)   # {path: Adapter}, e.g. to stack

When the model's family exports to a HuggingFace architecture (`jaxformer.interop`), the
tensors carry HF module names and peft loads the adapter onto the HF model
(`PeftModel.from_pretrained(hf_model, dir)`); `jaxformer.interop.hf.load(base, adapter=dir)` loads
adapters peft trained. Otherwise (a model no HF class reproduces, e.g. one without biases) the
names are jaxformer's module paths (`base_model.model.layers.0.attention.query.lora_A.weight`,
with the kernel flattened to [in, out] and `fan_in_fan_out: true`), marked as such in the config.
"""

from collections import Counter
from pathlib import Path

import numpy as np
from flax import nnx

from jaxformer.interop import peft
from jaxformer.interop.converters import converter_for_config
from jaxformer.interop.errors import CheckpointError, UnsupportedConfigError
from jaxformer.nn.adapters import Adapter, adapter_weights, geometry, linear_modules, set_adapters

OURS = {"module_names": "jaxformer"}


def hf_layout(model_config):
    """(converter, architecture) when `model_config` exports to an HF class, else None."""
    try:
        converter = converter_for_config(model_config)
        return converter, converter.export_architecture(model_config)
    except UnsupportedConfigError:
        return None


def _num_in(model) -> dict[tuple, int]:
    out = {}
    for path, module in linear_modules(model).items():
        key = tuple(int(p) if p.isdigit() else p for p in path.split("/"))
        out[key + ("kernel",)] = module.num_in
    return out


def _module_path(kernel_path: tuple) -> str:
    return "/".join(map(str, kernel_path[:-1]))


def _maps(row, num_in, fan_in_fan_out: bool):
    """The row's kernel maps in the declared layout, or the other one if only that fits."""
    try:
        return peft.kernel_maps(row, num_in, fan_in_fan_out), fan_in_fan_out
    except UnsupportedConfigError:
        return peft.kernel_maps(row, num_in, not fan_in_fan_out), not fan_in_fan_out


def _rows_by_module(converter, arch, model_config) -> dict[str, object]:
    return {row.name.removesuffix(".weight"): row for row in converter.tensors(arch, model_config)
            if row.name.endswith(".weight")}


def _check_unscanned(model_config) -> None:
    if getattr(model_config, "scan_layers", False):
        raise UnsupportedConfigError("adapters in peft's layout name each layer: use the model "
                                     "with scan_layers=false")


def save_adapter(path: str | Path, model: nnx.Module, model_config, *, overwrite: bool = False,
                 base_model: str | None = None) -> Path:
    """Write the model's adapters (not the model) to `path` in peft's layout."""
    weights = adapter_weights(model)
    if not weights:
        raise ValueError("the model has no LoRA adapters to save")
    _check_unscanned(model_config)
    layout = hf_layout(model_config)
    tensors, ranks, alphas, layouts = {}, {}, {}, set()
    if layout is None:
        for module_path, w in weights.items():
            name = module_path.replace("/", ".")
            rank = w.rank
            tensors[f"{peft.PREFIX}{name}.lora_A.weight"] = np.asarray(w.a).reshape(-1, rank).T
            tensors[f"{peft.PREFIX}{name}.lora_B.weight"] = np.asarray(w.b).reshape(rank, -1).T
            ranks[name], alphas[name] = rank, w.alpha
        layouts.add(True)
        extra = {"jaxformer": {**OURS, "family": model_config.family}}
    else:
        converter, arch = layout
        num_in = _num_in(model)
        for module, row in _rows_by_module(converter, arch, model_config).items():
            touched = [p for p in row.params if _module_path(p) in weights]
            if not touched:
                continue
            maps, fan_in_fan_out = _maps(row, num_in, True)
            factors = [(weights[_module_path(m.param)].a, weights[_module_path(m.param)].b)
                       if _module_path(m.param) in weights else (None, None) for m in maps]
            scalings = {weights[_module_path(p)].scaling for p in touched}
            if len(scalings) > 1:
                raise UnsupportedConfigError(f"the adapters that make up {module} have different "
                                             f"scalings (alpha / r); peft needs one per module")
            a_hf, b_hf = peft.lora_to_hf(maps, factors, row.shape, fan_in_fan_out)
            tensors[f"{peft.PREFIX}{module}.lora_A.weight"] = a_hf
            tensors[f"{peft.PREFIX}{module}.lora_B.weight"] = b_hf
            ranks[module], alphas[module] = a_hf.shape[0], scalings.pop() * a_hf.shape[0]
            layouts.add(fan_in_fan_out)
        extra = None
    if len(layouts) > 1:
        raise UnsupportedConfigError("the adapted layers mix [in, out] and [out, in] weights in "
                                     "HF's layout; one peft file records one fan_in_fan_out")
    r, alpha = Counter(zip(ranks.values(), alphas.values())).most_common(1)[0][0]
    config = peft.lora_config(
        r=int(r), alpha=float(alpha), targets=sorted({m.rsplit(".", 1)[-1] for m in ranks}),
        fan_in_fan_out=layouts.pop(),
        rank_pattern={m: int(v) for m, v in ranks.items() if v != r},
        alpha_pattern={m: float(alphas[m]) for m in ranks if alphas[m] != alpha},
        modules_to_save=None, base_model=base_model, extra=extra)
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return peft.write_adapter_files(path, config, tensors, overwrite=overwrite)


def read_adapter(path: str | Path, model: nnx.Module, model_config, *,
                 arch: str | None = None) -> tuple[dict[str, Adapter], dict[tuple, np.ndarray]]:
    """({module path: Adapter}, {parameter path: array} of whole modules to replace) from a
    peft adapter directory, mapped onto `model` (a plain or adapted model of `model_config`).
    `arch`: the HF architecture whose names the adapter uses (default: the one the config
    exports to)."""
    config, tensors = peft.read_adapter_files(path)
    _check_unscanned(model_config)
    ours = (config.get("jaxformer") or {}).get("module_names") == "jaxformer"
    pairs, whole = {}, {}
    for name, array in tensors.items():
        local = name.removeprefix(peft.PREFIX)
        if ".lora_embedding_" in local or ".lora_magnitude_vector" in local:
            raise UnsupportedConfigError(f"{path}: {name} adapts an embedding or uses DoRA; "
                                         f"jaxformer loads LoRA on linear layers")
        for part in ("lora_A", "lora_B"):
            if local.endswith(f".{part}.weight"):
                pairs.setdefault(local.removesuffix(f".{part}.weight"), {})[part] = array
                break
        else:
            whole[local.removesuffix(".modules_to_save.default.weight") + ".weight"
                  if ".modules_to_save." in local else local] = array
    default_alpha, patterns = config.get("lora_alpha", 8), config.get("alpha_pattern") or {}
    linears = linear_modules(model)
    adapters: dict[str, Adapter] = {}
    replaced: dict[tuple, np.ndarray] = {}
    if ours:
        for module, factors in pairs.items():
            path_ = module.replace(".", "/")
            if path_ not in linears:
                raise CheckpointError(f"{path}: adapter for {module}, which this model lacks")
            g = linears[path_]
            kernel_in = _in_out(g)
            rank = factors["lora_A"].shape[0]
            a = factors["lora_A"].T.reshape(*kernel_in[0], rank)
            b = factors["lora_B"].T.reshape(rank, *kernel_in[1])
            adapters[path_] = Adapter(a, b, float(peft.pattern_value(patterns, module, default_alpha)))
        if whole:
            raise UnsupportedConfigError(f"{path}: whole-module tensors in a jaxformer-named adapter")
        return adapters, replaced
    converter = converter_for_config(model_config)
    arch = arch or converter.export_architecture(model_config)
    rows = _rows_by_module(converter, arch, model_config)
    prefix = converter.base_prefix.get(arch, "")
    lookup = lambda m: rows.get(m) or rows.get(prefix + m)
    num_in = _num_in(model)
    for module, factors in pairs.items():
        row = lookup(module)
        if row is None or set(factors) != {"lora_A", "lora_B"}:
            raise CheckpointError(f"{path}: {module} is not a weight of {arch} with this config, "
                                  f"or lacks its lora_A / lora_B")
        maps, _ = _maps(row, num_in, bool(config.get("fan_in_fan_out", False)))
        alpha = float(peft.pattern_value(patterns, module, default_alpha))
        for m in maps:
            a, b = peft.lora_to_ours(m, factors["lora_A"], factors["lora_B"])
            adapters[_module_path(m.param)] = Adapter(a, b, alpha)
    for name, array in whole.items():
        row = next((r for r in converter.tensors(arch, model_config)
                    if r.name in (name, prefix + name)), None)
        if row is None or tuple(array.shape) != tuple(row.shape):
            raise CheckpointError(f"{path}: {name} is not a weight of {arch} with this config")
        for param, value in zip(row.params, row.to_jax(array)):
            replaced[param] = value
    return adapters, replaced


def _in_out(module) -> tuple[tuple, tuple]:
    g = geometry(module)
    return tuple(g["in_shape"]), tuple(g["out_shape"])


def load_adapter(model: nnx.Module, path: str | Path, model_config, *, arch: str | None = None,
                 dtype: str | None = None) -> nnx.Module:
    """Attach the adapter at `path` to `model` (in place; any adapters it had are replaced) and
    fill the whole modules it saves. Returns the model."""
    adapters, replaced = read_adapter(path, model, model_config, arch=arch)
    set_adapters(model, adapters, dtype=dtype)
    if replaced:
        state = nnx.state(model, nnx.Param)
        flat = dict(nnx.to_flat_state(state))
        for param, value in replaced.items():
            if param not in flat:
                raise CheckpointError(f"{path}: saves {'/'.join(map(str, param))}, which the model lacks")
            variable = flat[param]
            variable.set_value(np.asarray(value, variable.get_value().dtype))
        nnx.update(model, state)
    return model
