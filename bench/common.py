"""What every benchmark shares: the machine line it prints first, the one way it times code, the
allocator both sides of a comparison run under, and the matmul ceiling."""

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """The line every benchmark prints first: the CPU, its cores, JAX and its device, and the
    load average (other work on the machine makes timings noisy)."""
    import jax

    load = os.getloadavg()[0]
    noisy = " (above the core count: timings are noisy)" if load > (os.cpu_count() or 1) else ""
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__} on "
            f"{jax.devices()[0].device_kind} ({jax.default_backend()}), load average {load:.1f}{noisy}")


def same_allocator() -> str:
    """Restart this script once with the glibc allocator settings `jaxformer train` uses
    (jaxformer/train/host.py), so both libraries of a comparison run under them in one process;
    returns a line naming them. $JAXFORMER_KEEP_MALLOC=1 leaves the allocator alone."""
    from jaxformer.train.host import SETTING_NAMES, restart_with_malloc_settings

    restart_with_malloc_settings(script=True)
    shown = ", ".join(f"{k}={os.environ[k]}" for k in SETTING_NAMES if k in os.environ)
    return f"allocator (both sides): {shown or 'glibc defaults'}"


@dataclass(frozen=True)
class Timings:
    """The seconds of each timed call, and what the last call returned."""

    seconds: list[float]
    result: object = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    def runs(self) -> str:
        return ", ".join(f"{t:.2f}" for t in self.seconds)


def time_calls(fn: Callable[[], object], repeats: int = 1, warmup: int = 0) -> Timings:
    """Time `repeats` calls of `fn()` after `warmup` untimed ones. Each call is timed until its
    JAX results are ready: JAX returns before it computes (asynchronous dispatch), so without the
    wait a call would time the dispatch alone. Both sides of a comparison go through here, so
    they are timed the same way."""
    seconds, result = [], None
    for i in range(warmup + repeats):
        result = None  # the previous call's result is freed before the next call runs
        start = time.perf_counter()
        result = _ready(fn())
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return Timings(seconds, result)


def _ready(result):
    jax = sys.modules.get("jax")  # not loaded: the result holds no JAX array to wait for
    return jax.block_until_ready(result) if jax is not None else result


# The ceiling. A training step of a transformer is almost all matmul work, so no implementation
# can run it faster than its matmul FLOPs divided by the fastest matmul rate this machine gives.
# The benchmarks print that bound next to the reference's time: when the reference already runs
# close to it, a goal of "N x the reference" can be beyond the hardware, whatever the code does.


def matmul_peak(shapes: list[tuple[int, int, int]], repeats: int = 5) -> tuple[float, str]:
    """The fastest float32 rate (FLOP/s) measured here for an [m, k] x [k, n] matmul of any of
    `shapes`, by XLA and by PyTorch (median of `repeats` each), and which shape and library gave it.
    Taken as the most any step made of these matmuls can sustain on this machine: a measured
    best, not a vendor figure (an upper bound up to timing noise)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    best, where = 0.0, ""
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        a = rng.normal(size=(m, k)).astype(np.float32)
        b = rng.normal(size=(k, n)).astype(np.float32)
        ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
        matmul = jax.jit(jnp.matmul)
        for library, fn in (("XLA", lambda: matmul(ja, jb)), ("PyTorch", lambda: ta @ tb)):
            rate = 2 * m * k * n / time_calls(fn, repeats, warmup=1).median  # XLA compiles first
            if rate > best:
                best, where = rate, f"{library}, {m}x{k}x{n}"
    return best, where


def torch_matmul_flops(step: Callable[[], object]) -> int:
    """The matmul FLOPs (forward and backward) of one call of `step`, counted by PyTorch's
    FlopCounterMode: an independent count of the reference's work."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def ceiling_line(flops: float, reference_seconds: float, peak: float, where: str, goal: float,
                 work: str = "the reference's step") -> str:
    """What the matmul bound allows: `flops` of matmuls a step (`work`) at the fastest rate
    measured take at least flops / peak seconds, so doing that work cannot beat the reference's
    `reference_seconds` a step by more than their ratio. With the reference's own work, the bound
    over its time is also the share of the peak the reference reaches."""
    floor = flops / peak
    ceiling = reference_seconds / floor
    verdict = "within reach" if ceiling >= goal else "beyond this machine"
    return (f"ceiling: {work} is {flops / 1e9:,.0f} GFLOP of matmuls, at the best measured matmul "
            f"rate ({peak / 1e9:.0f} GFLOP/s, {where}) at least {floor:.2f} s, against the "
            f"reference's {reference_seconds:.2f} s ({floor / reference_seconds:.0%}): at most "
            f"{ceiling:.2f}x the reference's speed (goal {goal}x: {verdict})")
