"""The model registry: `model.family` in a config names a config dataclass and a module class.

    family = get_family("decoder")          # or family_of(config)
    model = build_model(config, rngs=nnx.Rngs(0))

Presets, parameter counts, `jaxformer info`, the HF importer, sharded state creation, run
directories and generation all go through here, so code outside `jaxformer/models/` never names a
particular model class. A new family registers itself once:

    register_family(Family("encoder", EncoderConfig, Encoder, default_task="masked_lm"))

A family's config is a frozen dataclass whose fields all have defaults, with a `family` field
holding the family's name and a `replace(**changes)` method; its module is built as
`ModelClass(config, rngs=rngs)` and returns a `ModelOutput`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from jaxformer.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    config_class: type
    model_class: type
    default_task: str  # the task a config without a `task:` section trains
    description: str = ""
    # config -> ParamCounts, for counts by part in `jaxformer info` (default: every leaf of the
    # abstract model, grouped by its top-level module).
    param_counts: Callable[[Any], Any] | None = None
    # (config, seq_len) -> training FLOPs per token by part, {description: FLOPs} (default: 6N
    # alone, PaLM appendix B without the attention term).
    flops_parts: Callable[[Any, int | None], dict[str, int]] | None = None
    # config -> rows (symbol, name, value, note) for the sizes table of `jaxformer info`.
    sizes: Callable[[Any], list[tuple[str, str, int, str]]] | None = None


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add (or replace) a family. Returns it, so a module can keep a handle."""
    if getattr(family.config_class(), "family", None) != family.name:
        raise ValueError(f"{family.config_class.__name__}().family must default to "
                         f"{family.name!r}, the family's name, so saved configs name their family")
    _FAMILIES[family.name] = family
    return family


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered as `name`; a ConfigError listing the known ones otherwise."""
    if name not in _FAMILIES:
        raise ConfigError(f"unknown model.family {name!r}: known families are "
                          f"{', '.join(family_names())}")
    return _FAMILIES[name]


def family_of(config: Any) -> Family:
    """The family of a model config (its `family` field)."""
    name = getattr(config, "family", None)
    if name is None:
        raise TypeError(f"{type(config).__name__} is not a model config (it has no `family` field)")
    return get_family(name)


def build_model(config: Any, *, rngs: nnx.Rngs) -> nnx.Module:
    """The family's module for `config`, with parameters drawn from `rngs`."""
    return family_of(config).model_class(config, rngs=rngs)


def abstract_model(config: Any) -> nnx.Module:
    """The model with `jax.ShapeDtypeStruct`s for weights: shapes, dtypes and logical axis names,
    nothing allocated."""
    return nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))


def init_fn(config: Any) -> Callable[[jax.Array], nnx.Module]:
    """rng key -> model: the pure creation function that jit and eval_shape trace."""
    return lambda rng: build_model(config, rngs=nnx.Rngs(params=rng))
