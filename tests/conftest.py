"""Tests run on the CPU. Eight fake CPU devices let sharding tests build real meshes."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
