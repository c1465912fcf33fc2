"""peft LoRA adapters <-> jaxformer adapters, for every family with an HF converter.

A peft adapter directory holds `adapter_config.json` (r, lora_alpha, target_modules,
fan_in_fan_out, rank_pattern, alpha_pattern, modules_to_save) and `adapter_model.safetensors`
with `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r], scaling
alpha / r, for the update B A of the module's weight (`fan_in_fan_out`: GPT-2's Conv1D stores
weights [in, out], so the update is (B A)^T). Tensors without `lora_` are whole modules to
save (a new head).

Nothing here knows a family. A converter's weight table says how an HF weight becomes
jaxformer parameters through transposes, reshapes, splits and padding; running that map on an
array of the weight's own entry numbers tells, for every entry of each of our kernels, which HF
entry it came from. That gives each kernel's input and output index maps, and a LoRA update
maps factor by factor: our A = A_hf at the input map, our B = B_hf at the output map. GPT-2's
fused `c_attn` thereby becomes three adapters (query, key, value) sharing A, each with its rows
of B, and exporting stacks them back (rank adding up, recorded in `rank_pattern`).
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxformer.interop.errors import CheckpointError, UnsupportedConfigError
from jaxformer.interop.tables import Tensor

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclasses.dataclass
class KernelMap:
    """Where one of our kernels [*in, *out] sits in an HF weight: hf_in[i] / hf_out[o] for each
    flattened input / output index (-1: padding that no HF entry fills)."""

    param: tuple  # the parameter path, ending in "kernel"
    in_shape: tuple
    out_shape: tuple
    hf_in: np.ndarray
    hf_out: np.ndarray


def kernel_maps(row: Tensor, num_in: dict[tuple, int], fan_in_fan_out: bool) -> list[KernelMap]:
    """Index maps of the kernels a weight-table row fills (see the module docstring).
    num_in: {kernel path: how many leading axes of that kernel are inputs}."""
    if len(row.shape) != 2:
        raise UnsupportedConfigError(f"{row.name} is not a matrix: LoRA adapts 2-D weights only")
    rows_hf, cols_hf = row.shape
    ids = np.arange(1, rows_hf * cols_hf + 1, dtype=np.float64).reshape(row.shape)
    maps = []
    for path, part in zip(row.params, row.to_jax(ids)):
        if path not in num_in:
            continue  # not a kernel of a linear layer (a table, a bias)
        n_in = num_in[path]
        in_shape, out_shape = part.shape[:n_in], part.shape[n_in:]
        flat = np.asarray(part).reshape(math.prod(in_shape), math.prod(out_shape))
        if not np.array_equal(flat, np.round(flat)):
            raise UnsupportedConfigError(f"{row.name} -> {'/'.join(map(str, path))} is not a pure "
                                         f"relayout of entries; its adapters cannot be mapped")
        index = flat.astype(np.int64) - 1  # -1: padding
        r, c = np.divmod(np.maximum(index, 0), cols_hf)
        hf_in, hf_out = (r, c) if fan_in_fan_out else (c, r)
        real = index >= 0
        in_map = np.where(real.any(1), np.max(np.where(real, hf_in, -1), axis=1), -1)
        out_map = np.where(real.any(0), np.max(np.where(real, hf_out, -1), axis=0), -1)
        ok = (~real) | ((hf_in == in_map[:, None]) & (hf_out == out_map[None, :]))
        if not ok.all() or (in_map < 0).any():
            raise UnsupportedConfigError(f"{row.name} -> {'/'.join(map(str, path))} mixes input "
                                         f"and output axes; its adapters cannot be mapped")
        maps.append(KernelMap(path, tuple(in_shape), tuple(out_shape), in_map, out_map))
    return maps


def lora_to_ours(m: KernelMap, a_hf: np.ndarray, b_hf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """peft's A [r, in_hf], B [out_hf, r] -> our A [*in, r], B [r, *out]."""
    rank = a_hf.shape[0]
    a = a_hf[:, m.hf_in].T.reshape(*m.in_shape, rank)
    b = np.where(m.hf_out[None, :] >= 0, b_hf[np.maximum(m.hf_out, 0), :].T, 0.0)
    return a, b.reshape(rank, *m.out_shape).astype(b_hf.dtype)


def lora_to_hf(maps: list[KernelMap], factors: list, hf_shape, fan_in_fan_out: bool):
    """Our adapters on the kernels of one HF weight -> peft's (A [r, in_hf], B [out_hf, r]),
    the kernels' ranks stacked (a kernel without an adapter contributes nothing)."""
    d_in, d_out = (hf_shape[0], hf_shape[1]) if fan_in_fan_out else (hf_shape[1], hf_shape[0])
    a_blocks, b_blocks = [], []
    for m, (a, b) in zip(maps, factors):
        if a is None:
            continue
        rank = a.shape[-1]
        a_hf = np.zeros((rank, d_in), np.float32)
        a_hf[:, m.hf_in] = np.asarray(a, np.float32).reshape(-1, rank).T
        b_hf = np.zeros((d_out, rank), np.float32)
        real = m.hf_out >= 0
        b_hf[m.hf_out[real], :] = np.asarray(b, np.float32).reshape(rank, -1)[:, real].T
        a_blocks.append(a_hf)
        b_blocks.append(b_hf)
    return np.concatenate(a_blocks, 0), np.concatenate(b_blocks, 1)


# --- files ---

def read_adapter_files(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(adapter_config.json as a dict, {tensor name: array}) of a peft adapter directory."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.exists():
        raise CheckpointError(f"{path} is not a peft adapter directory (no {CONFIG_FILE})")
    if not weights_file.exists():
        pickled = path / "adapter_model.bin"
        hint = (f"; it holds only the pickled {pickled.name}, which jaxformer does not load: "
                f"re-save it with `model.save_pretrained(..., safe_serialization=True)`"
                if pickled.exists() else "")
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}{hint}")
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise UnsupportedConfigError(f"{path} is a {config['peft_type']} adapter; jaxformer loads "
                                     f"LoRA adapters")
    for key, allowed in (("use_dora", False), ("use_rslora", False), ("lora_bias", False),
                         ("bias", "none")):
        if config.get(key, allowed) != allowed:
            raise UnsupportedConfigError(f"{path}: adapter_config.json {key}={config[key]!r} is "
                                         f"not supported (jaxformer needs {key}={allowed!r})")
    with safe_open(weights_file, framework="numpy") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return config, tensors


def pattern_value(patterns: dict, module: str, default):
    """peft's rank_pattern / alpha_pattern lookup: the first key matching the module's name."""
    import re

    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def write_adapter_files(path: str | Path, config: dict, tensors: dict[str, np.ndarray], *,
                        overwrite: bool = False) -> Path:
    path = Path(path)
    if not overwrite and (path / WEIGHTS_FILE).exists():
        raise CheckpointError(f"{path} already holds an adapter; pass overwrite=True or a new "
                              f"directory")
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path / WEIGHTS_FILE),
              metadata={"format": "pt"})
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def lora_config(*, r: int, alpha: float, targets: list[str], fan_in_fan_out: bool,
                rank_pattern: dict, alpha_pattern: dict, modules_to_save: list[str] | None,
                base_model: str | None, extra: dict | None = None) -> dict:
    """An adapter_config.json that `peft.PeftModel.from_pretrained` reads."""
    config = {
        "peft_type": "LORA", "task_type": None, "r": r, "lora_alpha": alpha,
        "target_modules": sorted(targets), "fan_in_fan_out": fan_in_fan_out,
        "lora_dropout": 0.0, "bias": "none", "use_rslora": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": modules_to_save,
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "base_model_name_or_path": base_model or None,
    }
    if extra:
        config.update(extra)
    return config
