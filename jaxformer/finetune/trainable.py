"""Which variables the optimizer updates: `train.trainable` as an NNX filter.

Entries are NNX variable types by name ("Param" selects every `nnx.Param`, LoRA adapters'
`nnx.LoRAParam` included, since it subclasses Param) or glob patterns over parameter paths
("lm_head/*", "layers/1[01]/*"), which select the `nnx.Param`s whose '/'-joined path matches. The
selection is the union of the entries; everything else is frozen: it is passed to the model as
is, gets no gradient and no optimizer state.
"""

import fnmatch
from collections.abc import Sequence

from flax import nnx

from jaxformer.errors import ConfigError
from jaxformer.nn.params import path_string

# Variable types a config may name. Families that add their own (quantized weights, adapters)
# register them with `register_variable_type`.
VARIABLE_TYPES: dict[str, type] = {
    "Param": nnx.Param, "LoRAParam": nnx.LoRAParam, "BatchStat": nnx.BatchStat,
    "Cache": nnx.Cache, "Intermediate": nnx.Intermediate,
}


def register_variable_type(cls: type) -> type:
    VARIABLE_TYPES[cls.__name__] = cls
    return cls


def _is_pattern(entry: str) -> bool:
    return any(ch in entry for ch in "/*?[")


def trainable_filter(entries: Sequence[str]) -> nnx.filterlib.Filter:
    """The NNX filter for `train.trainable` (see the module docstring)."""
    filters = []
    for entry in entries:
        if _is_pattern(entry):
            filters.append(lambda path, value, pattern=entry: (
                isinstance(value, nnx.Param) and fnmatch.fnmatchcase(path_string(path), pattern)))
        elif entry in VARIABLE_TYPES:
            filters.append(VARIABLE_TYPES[entry])
        else:
            raise ConfigError(f"train.trainable entry {entry!r} is neither a variable type "
                              f"({', '.join(VARIABLE_TYPES)}) nor a path pattern (with / or *, "
                              f"e.g. 'lm_head/*')")
    return nnx.Any(*filters)
