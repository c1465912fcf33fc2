"""The glibc allocator settings `jaxformer train` restarts itself with (jaxformer/train/host.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jaxformer.train.host import HUGE_PAGES, MALLOC_ENV, malloc_env

# A step's temporaries as XLA:CPU allocates them: one block above the 64 MiB a glibc thread arena
# holds, malloc'd on a worker thread, written, freed, once a step. Prints the page faults per step.
BLOCK_PER_STEP = """
import ctypes, resource, threading
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size, steps = 81 << 20, 8
def steps_on_a_worker():
    for _ in range(steps):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(ctypes.c_void_p(block))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker = threading.Thread(target=steps_on_a_worker)
worker.start()
worker.join()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps)
"""


def test_settings_are_added_and_the_users_kept():
    env = malloc_env({"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert all(env[k] == v for k, v in MALLOC_ENV.items())
    assert env["GLIBC_TUNABLES"] == HUGE_PAGES

    own = malloc_env({"MALLOC_TOP_PAD_": "4096", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert own["MALLOC_TOP_PAD_"] == "4096"
    assert own["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGE_PAGES}"
    assert malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_settings_are_a_fixed_point():
    """The restart happens when the environment lacks a setting; after it nothing is missing,
    so the restarted process does not restart again."""
    once = malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert malloc_env(once) == once


def _transparent_huge_pages() -> str:
    """The kernel's THP mode: "always", "madvise", "never" ("" where there is no such file)."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    found = re.search(r"\[(\w+)\]", path.read_text()) if path.exists() else None
    return found[1] if found else ""


def _glibc_at_least(major: int, minor: int) -> bool:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split() if hasattr(os, "confstr") else ("", "")
    found = re.match(r"(\d+)\.(\d+)", version)
    return name == "glibc" and found is not None and (int(found[1]), int(found[2])) >= (major, minor)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc_at_least(2, 35)
                    or _transparent_huge_pages() not in ("always", "madvise"),
                    reason="needs glibc >= 2.35 (the hugetlb tunable) and transparent huge pages")
def test_a_large_block_on_a_worker_thread_stops_faulting_page_by_page():
    def faults_per_step(env):
        keep = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV and k != "GLIBC_TUNABLES"}
        out = subprocess.run([sys.executable, "-c", BLOCK_PER_STEP], env={**keep, **env},
                             capture_output=True, text=True, check=True).stdout
        return float(out)

    pages = (81 << 20) // 4096
    if _transparent_huge_pages() == "madvise":  # with "always" the kernel does it unasked
        thresholds_only = faults_per_step({**MALLOC_ENV, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
        assert thresholds_only > 0.9 * pages  # mmap'd afresh every step whatever the thresholds say
    assert faults_per_step(malloc_env({})) < 0.1 * pages
