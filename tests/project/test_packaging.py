"""What `pip install .` gives: a wheel holding the presets and the corpus, whose `jaxformer train`
works from any directory with an empty home and no network; blocks and models that import with
jax, flax, optax and numpy alone."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support.locations import OFFLINE, REPO, copy_checkout, subprocess_env

# Only these (and what they import themselves) may be loaded by `import jaxformer.nn, .models`.
IMPORT_CHECK = """
import sys
import jax, flax, flax.nnx, optax, numpy
allowed = {n.split(".")[0] for n in sys.modules} | set(sys.stdlib_module_names) | {"jaxformer"}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in allowed:
            raise ImportError(f"jaxformer.nn / jaxformer.models imported {name}")

sys.meta_path.insert(0, Refuse())
import jaxformer, jaxformer.nn, jaxformer.models
jaxformer.DecoderLM, jaxformer.nn.Attention
print("ok")
"""


def test_blocks_and_models_need_only_jax_flax_optax_numpy():
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow
def test_wheel_has_presets_and_corpus_and_trains_anywhere_offline(tmp_path):
    source = copy_checkout(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("jaxformer-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert presets and {f"jaxformer/configs/{p}" for p in presets} <= names
    assert "jaxformer/data/tinyshakespeare.txt.gz" in names

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                                "--target", str(site), str(wheel)], capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # No checkout on the path, no corpus copy anywhere, an empty home, no network (OFFLINE).
    anywhere, home = tmp_path / "elsewhere", tmp_path / "home"
    anywhere.mkdir()
    home.mkdir()
    env = {k: v for k, v in subprocess_env().items()
           if k not in ("JAXFORMER_DATA_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=f"{site}{os.pathsep}{OFFLINE}")
    where = subprocess.run([sys.executable, "-c", "import jaxformer; print(jaxformer.__file__)"],
                           cwd=anywhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(site / "jaxformer" / "__init__.py"), where.stderr
    trained = subprocess.run(
        [str(site / "bin" / "jaxformer"), "train", "shakespeare_char_cpu", "train.steps=20",
         "train.eval_every=20", "train.eval_batches=2", "train.sample_tokens=40",
         "train.progress=false"], cwd=anywhere, env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "--- sample (40 tokens" in trained.stdout
    assert (anywhere / "runs" / "shakespeare_char_cpu" / "checkpoints" / "20").is_dir()
    assert not list(home.rglob("*.txt")) and not (home / ".cache" / "jaxformer").exists()  # no download
