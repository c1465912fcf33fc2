"""Tests run on the CPU and offline. Eight fake CPU devices let sharding tests build real meshes;
`no_network` makes any connection to another machine fail (so a test that reaches for the network
fails rather than skips), here and in every subprocess (see offline/network_guard.py).

Compiled programs go to one persistent XLA cache per test session, shared by the xdist workers and
every subprocess they start (they inherit the environment): many tests compile the same small
models' train steps, each in a fresh process, and the cache lets all but the first skip it."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "support" / "offline"))
import network_guard  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def pytest_configure(config):
    # The controller (or a run without xdist) makes the directory before any worker starts; the
    # workers and their subprocesses read both settings from the environment when they import
    # jax. This process imported jax above, so it is told directly.
    if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config.xla_cache = tempfile.mkdtemp(prefix="jaxformer-tests-xla-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config.xla_cache
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
        jax.config.update("jax_compilation_cache_dir", config.xla_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_unconfigure(config):
    if getattr(config, "xla_cache", None):
        shutil.rmtree(config.xla_cache, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    network_guard.install()
    yield
    network_guard.uninstall()
