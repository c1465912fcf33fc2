"""Import and export HuggingFace checkpoints as safetensors, for every family with a converter
(GPT2LMHeadModel and LlamaForCausalLM: `jaxformer/interop/decoder.py`; MixtralForCausalLM:
`mixtral.py`; T5ForConditionalGeneration: `t5.py`, BartForConditionalGeneration and MarianMTModel:
`bart.py`, registered together in `encoder_decoder.py`; BertModel and its heads: `bert.py`;
ViTModel and ViTForImageClassification: `vit.py`; CLIPModel: `clip.py`; VisionEncoderDecoderModel
with a ViT encoder and a GPT-2 decoder: `vision_encoder_decoder.py`;
WhisperForConditionalGeneration: `whisper.py`).

    config, model = jaxformer.interop.hf.load("path/to/hf_dir")           # config.json + safetensors
    logits, _ = model(tokens)
    jaxformer.interop.hf.save("out_dir", config, model)                   # back to an HF directory

A directory holds `config.json` and either `model.safetensors` or `model.safetensors.index.json`
with its shards. Only safetensors are read: pickled `pytorch_model.bin` files can run code when
loaded, so they are refused with the command that converts them. Every tensor is checked against
the shape config.json implies before anything is built. `config.json`'s `architectures` picks the
converter (`converters.py`), which maps the config and names every tensor; the model is built
through the family registry.

The model comes back in the per-layer layout (`config.scan_layers=False`).
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

# Imported for their side effect: they register the built-in converters.
from jaxformer.interop import (bert, clip, decoder, encoder_decoder, mixtral,  # noqa: F401
                              vision_encoder_decoder, vit, whisper)
from jaxformer.interop.adapters import load_adapter
from jaxformer.interop.converters import Converter, converter_for, converter_for_config
from jaxformer.interop.errors import (CheckpointError, MissingTensorError, ShapeMismatchError,
                                      UnexpectedTensorError, UnsafeCheckpointError,
                                      UnsupportedConfigError)
from jaxformer.interop.tables import Tensor
from jaxformer.models import abstract_model
from jaxformer.models.validation import DTYPES

__all__ = ["config_from_hf", "config_to_hf", "load", "load_params", "save"]

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Config fields that do not change any parameter's shape, so a caller may set them at load time.
LOAD_OVERRIDES = ("attention_impl", "remat", "dropout")


def read_config(path: str | Path) -> dict:
    """The `config.json` of an HF model directory, as a dict."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a directory: pass a local HF model directory (config.json + "
            f"model.safetensors); download one with e.g. `hf download openai-community/gpt2 "
            f"--local-dir {path}`")
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{path} has no config.json: save the model with "
                              f"`model.save_pretrained('{path}')` in transformers")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file} is not valid JSON: {e}") from None


def config_from_hf(hf_config: dict) -> Any:
    """The jaxformer model config equal in function to an HF `config.json` dict, of the family
    whose converter reads its architecture."""
    converter, arch = converter_for(hf_config)
    return converter.config_from_hf(arch, hf_config)


def config_to_hf(config: Any) -> dict:
    """An HF `config.json` dict for a jaxformer model config (UnsupportedConfigError when no HF
    architecture reproduces it)."""
    converter = converter_for_config(config)
    return converter.config_to_hf(converter.export_architecture(config), config)


def _safetensors_files(path: Path) -> dict[str, Path]:
    """tensor name -> file holding it, for the single-file or the sharded layout."""
    index_file = path / SAFETENSORS_INDEX
    if index_file.exists():
        weight_map = json.loads(index_file.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_file} has no 'weight_map': re-save the model with "
                                  f"`save_pretrained(..., safe_serialization=True)`")
        missing = sorted({f for f in weight_map.values() if not (path / f).exists()})
        if missing:
            raise CheckpointError(f"{index_file} lists shards that are not in {path}: "
                                  f"{', '.join(missing)}; download them too")
        return {name: path / f for name, f in weight_map.items()}
    single = path / SAFETENSORS
    if single.exists():
        with safe_open(single, framework="numpy") as f:
            return {name: single for name in f.keys()}
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise UnsafeCheckpointError(
            f"{path} holds only pickled weights ({', '.join(pickled)}); jaxformer does not load "
            f"pickles because unpickling can run arbitrary code. Convert them once, in an "
            f"environment you trust, with transformers: `AutoModelForCausalLM.from_pretrained("
            f"'{path}').save_pretrained('{path}', safe_serialization=True)`")
    raise CheckpointError(f"{path} has neither {SAFETENSORS} nor {SAFETENSORS_INDEX}")


class _Checkpoint(contextlib.ExitStack):
    """The safetensors files of one directory, opened lazily: shapes are read from the headers,
    and a tensor's bytes only when `get` asks for it."""

    def __init__(self, path: Path, base_prefix: str):
        super().__init__()
        self.files = _safetensors_files(path)
        # Checkpoints saved from the bare GPT2Model / LlamaModel lack the base prefix.
        self.aliases = {
            (name if name.startswith(base_prefix) or name.startswith("lm_head.")
             else base_prefix + name): name
            for name in self.files}
        self._open: dict[Path, object] = {}

    def _handle(self, name: str):
        file = self.files[self.aliases[name]]
        if file not in self._open:
            self._open[file] = self.enter_context(safe_open(file, framework="numpy"))
        return self._open[file]

    def names(self) -> set[str]:
        return set(self.aliases)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(self.aliases[name]).get_shape())

    def get(self, name: str) -> np.ndarray:
        return self._handle(name).get_tensor(self.aliases[name])


def _check_names(ckpt: _Checkpoint, rows: list[Tensor], arch: str, tied: bool, path: Path,
                 ignored_suffixes: tuple[str, ...]) -> None:
    expected = {row.name for row in rows}
    found = ckpt.names()
    missing = sorted(expected - found)
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        hint = ("if the head shares the embedding, set tie_word_embeddings: true in config.json"
                if missing == ["lm_head.weight"] else
                "is config.json from the same model as the weights?")
        raise MissingTensorError(
            f"{path}: tensor {listed} missing from the safetensors files ({arch} with the sizes "
            f"in config.json needs it); {hint}")
    # A tied checkpoint may still carry lm_head.weight (it equals the embedding): skip it.
    extra = sorted(name for name in found - expected
                   if not (ignored_suffixes and name.endswith(ignored_suffixes))
                   and not (tied and name == "lm_head.weight"))
    if extra:
        listed = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise UnexpectedTensorError(
            f"{path}: unexpected tensors {listed} that {arch} with this config.json does not use; "
            f"check num_hidden_layers / n_layer and tie_word_embeddings in config.json")
    for row in rows:
        shape = ckpt.shape(row.name)
        if shape != row.shape:
            raise ShapeMismatchError(
                f"{path}: tensor {row.name} has shape {list(shape)} but config.json implies "
                f"{list(row.shape)}; config.json and the weights come from different models")


def load_params(path: str | Path, config: Any) -> dict[tuple, np.ndarray]:
    """The checkpoint's weights as {jaxformer parameter path: numpy array in jaxformer layout},
    e.g. ("layers", 0, "attention", "query", "kernel") -> [embed, heads, head_dim], cast to
    `config.param_dtype` (`config` as from `config_from_hf`). Every tensor is checked (names,
    shapes) before any is read. For placing weights yourself, e.g. sharded over a mesh."""
    path = Path(path)
    converter, arch = converter_for(read_config(path))
    rows = converter.tensors(arch, config)
    dtype = jnp.dtype(config.param_dtype)
    params = {}
    with _Checkpoint(path, converter.base_prefix.get(arch, "")) as ckpt:
        _check_names(ckpt, rows, arch, getattr(config, "tie_embeddings", False), path,
                     converter.ignored_suffixes)
        for row in rows:
            arrays = row.to_jax(ckpt.get(row.name))
            for param_path, array in zip(row.params, arrays):
                # np.require keeps a scalar 0-d (CLIP's logit scale); ascontiguousarray would not.
                array = np.require(array.astype(dtype), requirements="C")
                if row.part is None:
                    params[param_path] = array
                else:  # one entry (an expert) of a stacked parameter
                    index, count = row.part
                    params.setdefault(param_path, [None] * count)[index] = array
    for param_path, value in params.items():
        if isinstance(value, list):
            params[param_path] = np.stack(value)  # the table names every entry (checked above)
    return params


def _build(config: Any, params: dict[tuple, np.ndarray]) -> nnx.Module:
    """The family's model holding `params`, built from abstract shapes so no random init is
    spent."""
    graphdef, state = nnx.split(abstract_model(config))
    filled = []
    for param_path, variable in nnx.to_flat_state(state):
        if not isinstance(variable, nnx.Param) or param_path not in params:
            raise RuntimeError(f"HF weight table has no entry for {param_path}: the model's "
                               f"layout changed; update its converter in jaxformer/interop/")
        array = params.pop(param_path)
        expected = variable.get_value().shape
        if array.shape != expected:
            raise RuntimeError(f"HF weight table gives {param_path} shape {array.shape}, the model "
                               f"has {expected}: update its converter in jaxformer/interop/")
        filled.append((param_path, variable.replace(jnp.asarray(array))))
    if params:
        raise RuntimeError(f"HF weight table fills parameters the model lacks: {sorted(params)[:3]}")
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


def load(path: str | Path, *, dtype: str | None = None, adapter: str | Path | None = None,
         **overrides) -> tuple[Any, nnx.Module]:
    """Load a local HF directory of a supported architecture (see the module docstring; the list
    is `converters.supported_architectures()`).

    dtype: "float32" (default), "bfloat16" or "float16" for both the parameters and the compute.
    adapter: a peft LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to
    attach, as `jaxformer.finetune.load_adapter` does (merge it with `finetune.merge`).
    overrides: config fields that leave parameter shapes alone (`attention_impl`, `remat`,
    `dropout`). Returns (config, model) with the weights in place and `scan_layers=False`.
    """
    path = Path(path)
    hf_config = read_config(path)
    converter, arch = converter_for(hf_config)
    config = converter.config_from_hf(arch, hf_config)
    if converter.config_from_checkpoint is not None:
        with _Checkpoint(path, converter.base_prefix.get(arch, "")) as ckpt:
            config = converter.config_from_checkpoint(arch, config, ckpt)
    if dtype is not None:
        if dtype not in DTYPES:
            raise UnsupportedConfigError(f"dtype={dtype!r} is not one of {list(DTYPES)}")
        config = config.replace(dtype=dtype, param_dtype=dtype)
    if overrides.get("scan_layers"):
        raise UnsupportedConfigError(
            "HF import builds the per-layer layout: load with scan_layers=False, then stack the "
            "layers (each parameter of layers[i] along a new leading axis) for a scanned model")
    overrides.pop("scan_layers", None)
    bad = sorted(set(overrides) - set(LOAD_OVERRIDES))
    if bad:
        raise UnsupportedConfigError(
            f"cannot override {', '.join(bad)} when loading a checkpoint (they come from its "
            f"config.json); allowed: dtype, {', '.join(LOAD_OVERRIDES)}")
    config = config.replace(**overrides)
    model = _build(config, load_params(path, config))
    if adapter is not None:
        _, arch = converter_for(read_config(path))
        load_adapter(model, adapter, config, arch=arch)
    return config, model


def save(path: str | Path, config: Any, model: nnx.Module | nnx.State, *,
         overwrite: bool = False) -> Path:
    """Write `model` as an HF directory (config.json + model.safetensors) that transformers'
    `AutoModel*.from_pretrained(path)` loads. `model` is a jaxformer model or its
    `nnx.state(model, nnx.Param)`. Refuses to replace existing files unless `overwrite`."""
    path = Path(path)
    converter = converter_for_config(config)
    arch = converter.export_architecture(config)  # raises if no HF architecture matches
    hf_config = converter.config_to_hf(arch, config)
    index = path / SAFETENSORS_INDEX  # would shadow model.safetensors when HF loads the directory
    if not overwrite and any(p.exists() for p in (path / "config.json", path / SAFETENSORS, index)):
        raise CheckpointError(f"{path} already holds a model; pass overwrite=True or a new directory")
    state = nnx.state(model, nnx.Param) if isinstance(model, nnx.Module) else model
    params = {p: v.get_value() if isinstance(v, nnx.Variable) else v
              for p, v in nnx.to_flat_state(state)}
    tensors = {}
    for row in converter.tensors(arch, config):
        missing = [p for p in row.params if p not in params]
        if missing:
            raise CheckpointError(f"the model has no parameter {'/'.join(map(str, missing[0]))}, "
                                  f"which {row.name} needs: does the model match the config?")
        arrays = [np.asarray(jax.device_get(params[p])) for p in row.params]
        if row.part is not None:
            arrays = [a[row.part[0]] for a in arrays]
        tensors[row.name] = np.require(row.to_hf(*arrays), requirements="C")
    path.mkdir(parents=True, exist_ok=True)
    # Write to temporary names and rename, so an interrupted save never leaves half a file.
    _atomic_write(path / SAFETENSORS, lambda f: save_file(tensors, f, metadata={"format": "pt"}))
    _atomic_write(path / "config.json",
                  lambda f: Path(f).write_text(json.dumps(hf_config, indent=2) + "\n"))
    index.unlink(missing_ok=True)
    return path


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
