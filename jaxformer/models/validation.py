"""Checks every family config runs in `__post_init__`, with errors that name the `model.` key."""


def check_choice(config, name: str, allowed) -> None:
    value = getattr(config, name)
    if value not in allowed:
        raise ValueError(f"model.{name}={value!r} is not one of {list(allowed)}")


def check_positive(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"model.{name} must be positive, got {getattr(config, name)}")
