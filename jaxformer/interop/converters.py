"""The per-family HF converters, by architecture name and by model family.

A converter says how one family's HuggingFace checkpoints map onto jaxformer's: which
`architectures` it reads, how config.json becomes the family's config (and back), and the weight
table (see `tables.py`). `hf.load` / `hf.save` are written once against it; a family adds its
converter with `register_converter` in its own module under `jaxformer/interop/`, reading
activation names and settings and building the rows of linear layers and norms with
`conventions.py`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from jaxformer.interop.errors import UnsupportedArchitectureError, UnsupportedConfigError
from jaxformer.interop.tables import Tensor


@dataclasses.dataclass(frozen=True)
class Converter:
    family: str  # the jaxformer model family it builds
    architectures: tuple[str, ...]  # HF class names in config.json's `architectures`
    model_types: dict[str, str]  # config.json `model_type` -> architecture, when none is named
    config_from_hf: Callable[[str, dict], Any]  # (architecture, config.json) -> model config
    export_architecture: Callable[[Any], str]  # model config -> HF class (UnsupportedConfigError)
    config_to_hf: Callable[[str, Any], dict]  # (architecture, model config) -> config.json
    tensors: Callable[[str, Any], list[Tensor]]  # (architecture, model config) -> weight table
    base_prefix: dict[str, str]  # architecture -> prefix a bare base-model checkpoint lacks
    ignored_suffixes: tuple[str, ...] = ()  # saved buffers that are not parameters
    # (architecture, model config, checkpoint) -> model config, for settings config.json does not
    # record but the tensors show (T5 in transformers 5 writes tie_word_embeddings: true even for
    # an untied head). The checkpoint offers names() and get(name).
    config_from_checkpoint: Callable[[str, Any, Any], Any] | None = None


_CONVERTERS: list[Converter] = []


def register_converter(converter: Converter) -> Converter:
    _CONVERTERS.append(converter)
    return converter


def supported_architectures() -> list[str]:
    return [arch for c in _CONVERTERS for arch in c.architectures]


def converter_for(hf_config: dict[str, Any]) -> tuple[Converter, str]:
    """(converter, architecture) for an HF config.json dict: the first supported class named by
    `architectures`, or failing that its `model_type`."""
    names = hf_config.get("architectures") or []
    for name in names:
        for converter in _CONVERTERS:
            if name in converter.architectures:
                return converter, name
    if not names:
        for converter in _CONVERTERS:
            if hf_config.get("model_type") in converter.model_types:
                return converter, converter.model_types[hf_config["model_type"]]
    found = ", ".join(names) if names else f"model_type={hf_config.get('model_type')!r}"
    raise UnsupportedArchitectureError(
        f"unsupported architecture {found}: jaxformer imports {', '.join(supported_architectures())}")


def converter_for_config(config: Any) -> Converter:
    """The converter of a model config's family that can export it (a family may have several:
    the decoder's GPT-2/Llama and Mixtral); the first one's error if none can."""
    candidates = [c for c in _CONVERTERS if c.family == config.family]
    if not candidates:
        raise UnsupportedConfigError(f"no HuggingFace export for model family {config.family!r}")
    for converter in candidates:
        try:
            converter.export_architecture(config)
        except UnsupportedConfigError:
            continue
        return converter
    return candidates[0]
