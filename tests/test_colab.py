"""The Colab quickstart runs top to bottom (with fewer training steps), so it cannot rot.

Shell lines (`!jaxformer ...`) run as subprocesses of this interpreter; the install cell is skipped
(the package is installed already) and so is the image display when IPython is absent.
"""

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from locations import REPO, SHAKESPEARE, subprocess_env
from waiting import SAFETY_TIMEOUT_S

NOTEBOOK = REPO / "colab" / "quickstart.ipynb"


def code_cells() -> list[str]:
    nb = json.loads(NOTEBOOK.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def run_shell(line: str, cwd: Path) -> None:
    args = shlex.split(line)
    assert args[0] == "jaxformer", line
    args = [a.replace("train.steps=500", "train.steps=30") for a in args]
    env = subprocess_env(JAXFORMER_DATA_DIR=str(SHAKESPEARE.parent))
    done = subprocess.run([sys.executable, "-m", "jaxformer", *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="Tiny Shakespeare not found")
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for source in code_cells():
        if "pip" in source and "install" in source:
            continue
        if "IPython" in source and importlib.util.find_spec("IPython") is None:
            continue  # the image display only; the PNG itself is checked below
        python_lines = []
        for line in source.splitlines():
            if line.startswith("!"):
                exec("\n".join(python_lines), namespace)  # the Python before the shell line
                python_lines = []
                run_shell(line[1:], tmp_path)
            else:
                python_lines.append(line)
        exec("\n".join(python_lines), namespace)
    assert (tmp_path / "attention.png").stat().st_size > 0
    assert len(namespace["new"][0]) == 50 and len(namespace["long"]) == 200
