"""The Colab quickstart runs top to bottom, as on a fresh runtime: its own install cell installs
this checkout (the parameter cell is pointed at a copy of it, and at a short run) into a fresh
virtual environment, and every cell then runs in one Python process, as in a kernel.

The environment sees the packages installed here (`--system-site-packages`: no network needed) but
not the checkout: jaxformer must come from the notebook's own install."""

import json
import os
import subprocess
import sys
import venv

import pytest

from support.locations import OFFLINE, REPO, copy_checkout, subprocess_env
from support.waiting import SAFETY_TIMEOUT_S

NOTEBOOK = REPO / "colab" / "quickstart.ipynb"

# Runs the notebook's code cells in one namespace; after the cell tagged "parameters", the
# values CI chooses are set, as papermill does.
DRIVER = """
import json, sys
notebook, overrides = json.load(open(sys.argv[1])), sys.argv[2]
namespace = {"__name__": "__main__"}
for cell in notebook["cells"]:
    if cell["cell_type"] != "code":
        continue
    exec(compile("".join(cell["source"]), "<cell>", "exec"), namespace)
    if "parameters" in cell["metadata"].get("tags", []):
        exec(overrides, namespace)
import jaxformer
print("JAXFORMER_FROM", jaxformer.__file__)
print("NEW_TOKENS", len(namespace["new"][0]), len(namespace["long"]))
"""


def code_cells() -> list[dict]:
    return [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def test_cells_are_plain_python_with_one_parameters_cell():
    """So they run the same in Colab's kernel and here (no shell escapes or magics)."""
    cells = code_cells()
    assert sum("parameters" in c["metadata"].get("tags", []) for c in cells) == 1
    for cell in cells:
        for line in "".join(cell["source"]).splitlines():
            assert not line.lstrip().startswith(("!", "%")), line
    assert not any("subprocess" in "".join(c["source"]) and "jaxformer" in "".join(c["source"])
                   and "pip" not in "".join(c["source"]) for c in cells)  # trains in the kernel


@pytest.mark.slow
def test_quickstart_notebook_runs_from_its_install_cell(tmp_path):
    source = copy_checkout(tmp_path / "checkout")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in subprocess_env().items() if k not in ("JAXFORMER_DATA_DIR",)}
    env.update(PYTHONPATH=str(OFFLINE), HOME=str(home), MPLBACKEND="Agg")
    overrides = f"JAXFORMER_SOURCE = {str(source)!r}\nTRAIN_STEPS = 30\n"
    done = subprocess.run([str(python), "-c", DRIVER, str(NOTEBOOK), overrides], cwd=work, env=env,
                          capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = done.stdout.split("JAXFORMER_FROM ")[1].split()[0]
    assert installed.startswith(str(env_dir)) and "checkout" not in installed
    assert "NEW_TOKENS 50 200" in done.stdout
    assert "--- sample" in done.stdout and "step 30: validation loss" in done.stdout
    assert (work / "runs" / "colab_char" / "loss.png").read_bytes()[:4] == b"\x89PNG"
