"""Throughput and model FLOPs utilisation (MFU).

MFU = (training FLOPs per token x tokens per second) / (peak FLOP/s per device x devices), with
FLOPs per token from `jaxformer.models.counting.flops_per_token` (6N + 12 L d T, PaLM appendix B).
The peak is the vendor's dense bf16 figure for accelerators (a table) and, on a CPU, a float32
matmul measured once per process.
"""

import functools
import time

import jax
import jax.numpy as jnp

from jaxformer.models.counting import flops_per_token

# Dense bf16 peak FLOP/s per chip, vendor figures. device_kind substrings, most specific first.
PEAK_FLOPS = (
    ("tpu v6 lite", 918e12), ("tpu v6e", 918e12),
    ("tpu v5 lite", 197e12), ("tpu v5e", 197e12),
    ("tpu v5p", 459e12), ("tpu v5", 459e12),
    ("tpu v4", 275e12),
    ("h200", 989e12), ("h100", 989e12),  # SXM; H200 has H100's compute, more memory
    ("a100", 312e12),
)

def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """Peak FLOP/s of one device: the table for TPUs/GPUs, a measurement on CPUs; None when the
    accelerator is not in the table (MFU is then not reported)."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return measured_cpu_peak()
    kind = device.device_kind.lower()
    for name, flops in PEAK_FLOPS:
        if name in kind:
            return flops
    return None


@functools.cache
def measured_cpu_peak(size: int = 2048, repeats: int = 4) -> float:
    """Best float32 FLOP/s of a size x size matmul on the CPU backend (all host cores), measured
    once per process (about a second). Other load on the machine lowers the figure (and so
    raises MFU), which is why it is not cached across runs."""
    cpu = jax.devices("cpu")[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), cpu)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


class Throughput:
    """Tokens/s and MFU over the steps between two `measure` calls."""

    def __init__(self, model_config, seq_len: int, *, num_devices: int | None = None,
                 peak_per_device: float | None = None):
        self.flops_per_token = flops_per_token(model_config, seq_len)
        self.num_devices = num_devices or jax.device_count()
        self.peak = peak_per_device if peak_per_device is not None else peak_flops_per_device()
        self.reset()

    def reset(self) -> None:
        self.start, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def measure(self) -> dict:
        """{"tokens_per_s", "mfu" (fraction, or None)} since the last call; then restarts."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        tokens_per_s = self.tokens / elapsed
        self.reset()
        return {"tokens_per_s": tokens_per_s, "mfu": mfu(tokens_per_s, self.flops_per_token,
                                                          self.peak, self.num_devices)}


def mfu(tokens_per_s: float, flops_per_token: float, peak_per_device: float | None,
        num_devices: int = 1) -> float | None:
    if not peak_per_device:
        return None
    return tokens_per_s * flops_per_token / (peak_per_device * num_devices)
