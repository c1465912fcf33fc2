"""Model presets: YAML files in `configs/` whose `model:` section fills the config of the family
it names (`model.family`, default "decoder")."""

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from jaxformer.errors import ConfigError
from jaxformer.models.counting import count_params
from jaxformer.models.registry import get_family

# Inside the package, so an installed wheel has them (in a checkout it links to configs/).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

__all__ = ["CONFIG_DIR", "count_params", "find_config", "load_model_config", "preset_names"]


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def find_config(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a preset in `configs/` ("gpt2-small")."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    close = difflib.get_close_matches(str(name_or_path), preset_names(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Presets: {', '.join(preset_names())}."
    raise FileNotFoundError(f"no preset named {name_or_path!r} in {CONFIG_DIR}.{hint}")


def read_yaml(path: Path) -> DictConfig:
    """A YAML config file as a mapping; ConfigError (one line) when it does not parse, is empty,
    or its top level is not a mapping of sections."""
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # a YAML syntax error, or a lone scalar: one line that says where
        raise ConfigError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, data:, "
                          f"optimizer:, mesh:, train:), not a {type(loaded).__name__[:-6].lower()}")
    if not loaded:
        raise ConfigError(f"{path} is empty: give at least one section (e.g. model:), or name a "
                          f"preset ({', '.join(preset_names()[:3])}, ...)")
    return loaded


def checked_merge(schema, *sources, prefix: str = ""):
    """Merge dicts / OmegaConf configs onto the dataclass `schema` (a class or an instance) and
    build it. An unknown key or a value of the wrong type raises `ConfigError` naming the key
    (`prefix` + its dotted path) and its close matches; so does a check in `__post_init__`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), *sources)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        full_key = prefix + str(e.full_key or e.key)
        parent, _, leaf = full_key.rpartition(".")
        valid = _keys_at(schema, parent[len(prefix):])
        close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.6)
        where = f"{parent}." if parent else ""
        if close:
            hint = f" (did you mean {', '.join(where + c for c in close)}?)"
        else:
            hint = f" (valid keys under {parent or 'the top level'}: {', '.join(valid)})" if valid else ""
        raise ConfigError(f"unknown config key {full_key}{hint}") from None
    except ValidationError as e:
        raise ConfigError(f"bad value for {prefix}{e.full_key or e.key}: "
                          f"{e.msg.splitlines()[0]}") from None
    except (ValueError, TypeError) as e:  # checks in the dataclasses' __post_init__
        raise ConfigError(str(e).splitlines()[0]) from None


def _keys_at(schema, dotted: str) -> list[str]:
    """The field names of the (nested) dataclass at `dotted` inside `schema`."""
    node = OmegaConf.structured(schema)
    for part in filter(None, dotted.split(".")):
        node = node.get(part) if isinstance(node, DictConfig) else None
    return list(node.keys()) if isinstance(node, DictConfig) else []


def model_config_from_dict(values: dict):
    """Typed, checked conversion into the config class of `values["family"]` (default
    "decoder"): an unknown key or a wrong type names the key."""
    family = get_family(values.get("family") or "decoder")
    return checked_merge(family.config_class, values, prefix="model.")


def load_model_config(name_or_path: str | Path, **overrides):
    """The `model:` section of a preset or YAML file, with keyword overrides."""
    raw = OmegaConf.to_container(read_yaml(find_config(name_or_path)), resolve=True)
    if "model" not in raw:
        raise ConfigError(f"{name_or_path}: no 'model:' section")
    return model_config_from_dict({**raw["model"], **overrides})
