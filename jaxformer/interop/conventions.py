"""What every HF converter reads the same way: activation names, settings jaxformer requires, and
the weight rows of PyTorch's nn.Linear and norms.

    ACTIVATIONS = activations("gelu", "gelu_new", "relu")    # the config.json names a class reads
    act = choose("hidden_act", hf.get("hidden_act", "gelu"), ACTIVATIONS)  # gelu, gelu_tanh, relu
    hf_name = export_names(ACTIVATIONS)[config.activation]     # and back
    rows = linear("encoder.layer.0.output.dense", ("layers", 0, "feed_forward", "down"), (I,), (D,))
"""

from typing import Any

import numpy as np

from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import ParamPath, Tensor, reshaped
from jaxformer.nn.feedforward import GATED

# transformers' activation names (its ACT2FN table) -> jaxformer's (`jaxformer.nn.feedforward`).
# An export writes the first name listed for each of ours.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "quick_gelu": "quick_gelu", "relu": "relu", "silu": "silu", "swish": "silu"}
GATED_FORMS = {act: gated for gated, act in GATED.items()}  # silu -> swiglu, ...


def activations(*hf_names: str) -> dict[str, str]:
    """{HF name: jaxformer activation} for the names a converter reads, in `ACTIVATIONS`' order."""
    return {name: ours for name, ours in ACTIVATIONS.items() if name in hf_names}


def gated(table: dict[str, str]) -> dict[str, str]:
    """The table with each activation replaced by its gated feed-forward (silu -> swiglu): for
    classes whose MLP applies the named activation to a gate branch (Llama's `hidden_act`)."""
    return {name: GATED_FORMS[ours] for name, ours in table.items()}


def export_names(table: dict[str, str]) -> dict[str, str]:
    """{jaxformer activation: the HF name an export writes}, the first of the table's names."""
    names: dict[str, str] = {}
    for name, ours in table.items():
        names.setdefault(ours, name)
    return names


def choose(key: str, value: str, table: dict[str, str]) -> str:
    """table[value], `value` being config.json's `key`; UnsupportedConfigError naming the values
    the table accepts otherwise."""
    if value not in table:
        raise UnsupportedConfigError(f"config.json {key}={value!r} is not supported: use one of "
                                     f"{sorted(table)}")
    return table[value]


def require(hf: dict, key: str, expected: Any, default: Any, family: str) -> None:
    """UnsupportedConfigError unless config.json's `key` (`default` when absent) is `expected`:
    a setting of the HF class that jaxformer's `family` does not implement."""
    if hf.get(key, default) != expected:
        raise UnsupportedConfigError(f"config.json {key}={hf.get(key)!r} is not supported "
                                     f"(jaxformer's {family} needs {key}={expected!r})")


# --- weight rows of PyTorch modules ---


def linear(name: str, path: ParamPath, in_shape: tuple[int, ...], out_shape: tuple[int, ...], *,
           bias: bool = True) -> list[Tensor]:
    """An nn.Linear (`name`.weight [out, in], `name`.bias [out]) -> our kernel
    [*in_shape, *out_shape] (heads as their own axes) and bias [*out_shape] at `path`."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    rows = [reshaped(name + ".weight", (n_out, n_in), path + ("kernel",), in_shape + out_shape,
                     transpose=True)]
    if bias:
        rows.append(reshaped(name + ".bias", (n_out,), path + ("bias",), out_shape))
    return rows


def layer_norm(name: str, path: ParamPath, dim: int) -> list[Tensor]:
    """An nn.LayerNorm: weight -> scale, bias -> bias."""
    return [reshaped(name + ".weight", (dim,), path + ("scale",), (dim,)),
            reshaped(name + ".bias", (dim,), path + ("bias",), (dim,))]


def rms_norm(name: str, path: ParamPath, dim: int) -> list[Tensor]:
    """An RMS norm (Llama's LlamaRMSNorm, T5's T5LayerNorm): weight -> scale, no bias."""
    return [reshaped(name + ".weight", (dim,), path + ("scale",), (dim,))]
