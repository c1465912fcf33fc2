"""Tests run on the CPU and offline. Eight fake CPU devices let sharding tests build real meshes;
`no_network` makes any connection to another machine fail (so a test that reaches for the network
fails rather than skips), here and in every subprocess (see offline/network_guard.py)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "offline"))
import network_guard  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    network_guard.install()
    yield
    network_guard.uninstall()
