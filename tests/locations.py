"""Where the tests find the repository, and the environment for running `jaxformer` in a
subprocess: the checkout importable, on the CPU, offline (tests/offline/sitecustomize.py)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFLINE = Path(__file__).resolve().parent / "offline"


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment on the CPU, with the checkout importable and no network."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{REPO}{os.pathsep}{OFFLINE}",
            **extra}
