"""Model presets: YAML files in `configs/` whose `model:` section fills a `DecoderConfig`."""

import dataclasses
import difflib
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from jaxformer.models.config import DecoderConfig
from jaxformer.models.costs import count_params

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

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


def model_config_from_dict(values: dict) -> DecoderConfig:
    """Typed, checked conversion: an unknown key or a wrong type names the key."""
    schema = OmegaConf.structured(DecoderConfig)
    try:
        merged = OmegaConf.merge(schema, values)
    except ConfigKeyError as e:
        key = str(e.key) if getattr(e, "key", None) else str(e)
        fields = [f.name for f in dataclasses.fields(DecoderConfig)]
        close = difflib.get_close_matches(key, fields, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model key model.{key}{hint}") from None
    except ValidationError as e:
        raise ValueError(f"bad value for model.{e.key}: {e.msg.splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


def load_model_config(name_or_path: str | Path, **overrides) -> DecoderConfig:
    """The `model:` section of a preset or YAML file, with keyword overrides."""
    raw = OmegaConf.to_container(OmegaConf.load(find_config(name_or_path)), resolve=True)
    if "model" not in raw:
        raise ValueError(f"{name_or_path}: no 'model:' section")
    return model_config_from_dict({**raw["model"], **overrides})
