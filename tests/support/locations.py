"""Where the tests find the repository, and the environment for running `jaxformer` in a
subprocess: the checkout importable, on the CPU, offline (tests/support/offline/sitecustomize.py)."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OFFLINE = Path(__file__).resolve().parent / "offline"


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment on the CPU, with the checkout importable (and tests/, so that a
    test module run as a script finds `support`) and no network."""
    path = os.pathsep.join(map(str, (REPO, REPO / "tests", OFFLINE)))
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path, **extra}


def copy_checkout(destination: Path) -> Path:
    """The checkout's files as a fresh clone would have them (tracked, plus new files that git
    does not ignore), copied to `destination`: builds there cannot touch the checkout."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    for name in filter(None, listed.stdout.split("\0")):
        source, target = REPO / name, destination / name
        if not os.path.lexists(source):
            continue  # deleted in the work tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination
