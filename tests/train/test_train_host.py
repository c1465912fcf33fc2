"""The glibc allocator settings `jaxformer train` restarts itself with (jaxformer/train/host.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

from jaxformer.train.host import HUGE_PAGES, MALLOC_ENV, SETTING_NAMES, TUNABLES, malloc_env

# A step's temporaries as XLA:CPU allocates them: one block above the 64 MiB a glibc thread arena
# holds, malloc'd on a worker thread, written, freed, once a step. Prints the page faults per step.
BLOCK_PER_STEP = """
import ctypes, ctypes.util, resource, threading
libc = ctypes.CDLL(ctypes.util.find_library("c"))
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


def test_the_restart_happens_only_when_a_setting_is_missing(monkeypatch):
    from jaxformer.train import host

    calls = []
    monkeypatch.setattr(host.os, "execve", lambda exe, argv, env: calls.append(env))
    monkeypatch.setattr(host.sys, "platform", "linux")
    for name in (*host.SETTING_NAMES, host.OPT_OUT):
        monkeypatch.delenv(name, raising=False)

    host.restart_with_malloc_settings(script=True)
    assert calls == [malloc_env(os.environ)]  # the settings missing: one restart with them
    for name, value in calls[0].items():
        monkeypatch.setenv(name, value)
    host.restart_with_malloc_settings(script=True)  # the restarted process goes on
    host.restart_with_malloc_settings()  # not the `jaxformer` command, not a script: nothing
    monkeypatch.setenv(host.OPT_OUT, "1")
    monkeypatch.delenv(host.TUNABLES)
    host.restart_with_malloc_settings(script=True)  # opted out
    monkeypatch.delenv(host.OPT_OUT)
    monkeypatch.setattr(host.sys, "platform", "darwin")
    host.restart_with_malloc_settings(script=True)  # glibc only
    assert len(calls) == 1


def _huge_pages_available() -> bool:
    """glibc >= 2.35 (the hugetlb tunable) and transparent huge pages not "never"."""
    names = getattr(os, "confstr_names", {})
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in names else ""
    found = re.fullmatch(r"glibc (\d+)\.(\d+).*", libc or "")
    return (found is not None and (int(found[1]), int(found[2])) >= (2, 35)
            and _transparent_huge_pages() in ("always", "madvise"))


def _transparent_huge_pages() -> str:
    """The kernel's THP mode: "always", "madvise", "never" ("" where there is no such file)."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    found = re.search(r"\[(\w+)\]", path.read_text()) if path.exists() else None
    return found[1] if found else ""


def test_a_large_block_on_a_worker_thread_stops_faulting_page_by_page():
    def faults_per_step(env):
        keep = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
        out = subprocess.run([sys.executable, "-c", BLOCK_PER_STEP], env={**keep, **env},
                             capture_output=True, text=True, check=True).stdout
        return float(out)

    pages = (81 << 20) // 4096
    thresholds_only = faults_per_step({**MALLOC_ENV, TUNABLES: "glibc.malloc.hugetlb=0"})
    if not _huge_pages_available():  # the tunable is ignored: the settings must cost nothing
        assert faults_per_step(malloc_env({})) <= 1.1 * thresholds_only + 16
        return
    if _transparent_huge_pages() == "madvise":  # with "always" the kernel does it unasked
        assert thresholds_only > 0.9 * pages  # mmap'd afresh every step whatever the thresholds say
    assert faults_per_step(malloc_env({})) < 0.1 * pages
