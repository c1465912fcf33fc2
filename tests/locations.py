"""Where the tests find the repository and the Tiny Shakespeare copy (`../shared` beside the
checkout, or $JAXFORMER_DATA_DIR), and the environment for running `jaxformer` in a subprocess."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = Path(os.environ.get("JAXFORMER_DATA_DIR",
                                  REPO.parent / "shared" / "data" / "tinyshakespeare")) / "input.txt"


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment on the CPU, with the checkout importable."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), **extra}
