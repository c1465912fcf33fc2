"""Tasks by name: `task.name` in a run config picks one."""

from jaxformer.errors import ConfigError
from jaxformer.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make `cls` available as `task.name = cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> type[Task]:
    if name not in _TASKS:
        raise ConfigError(f"unknown task.name {name!r}: known tasks are {', '.join(task_names())}")
    return _TASKS[name]


def make_task(config) -> Task:
    """The task object for a run config (its `task.name`)."""
    return get_task(config.task.name)(config)
