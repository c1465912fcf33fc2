"""Checks every family config runs in `__post_init__`, with errors that name the `model.` key."""

from jaxformer.nn.attention_ops import IMPLEMENTATIONS

REMAT = ("auto", "none", "keep_weights", "dots_saveable", "full")
DTYPES = ("float32", "bfloat16", "float16")
NORMS = ("layernorm", "rmsnorm")  # `jaxformer.nn.norms.make_norm`


def check_choice(config, name: str, allowed) -> None:
    value = getattr(config, name)
    if value not in allowed:
        raise ValueError(f"model.{name}={value!r} is not one of {list(allowed)}")


def check_positive(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"model.{name} must be positive, got {getattr(config, name)}")


def check_compute(config) -> None:
    """The settings of how every family computes: attention implementation, remat, dtypes."""
    check_choice(config, "attention_impl", IMPLEMENTATIONS)
    check_choice(config, "remat", REMAT)
    check_choice(config, "dtype", DTYPES)
    check_choice(config, "param_dtype", DTYPES)


def check_fraction(config, *names: str) -> None:
    """Dropout rates: in [0, 1) (None, where a field allows it, means unset)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"model.{name} must be in [0, 1), got {value}")


def check_heads(config) -> None:
    """d_model splits into num_heads heads unless head_dim is given."""
    if config.head_dim is None and config.d_model % config.num_heads:
        raise ValueError(f"model.d_model={config.d_model} is not divisible by model.num_heads="
                         f"{config.num_heads}: set model.head_dim explicitly")
