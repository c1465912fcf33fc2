"""What every benchmark prints and how it times: the machine, and the median of repeated runs."""

import os
import platform
import statistics
import time
from collections.abc import Callable


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
    import jax

    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__} on "
            f"{jax.devices()[0].device_kind} ({jax.default_backend()}), load average "
            f"{os.getloadavg()[0]:.1f} (above the core count, timings are noisy)")


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """(median seconds, every run's seconds) of `fn()` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times
