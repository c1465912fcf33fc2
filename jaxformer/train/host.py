"""Host memory allocation settings for training on CPU.

XLA:CPU allocates each step's temporary buffers afresh. With glibc's default malloc, large blocks
are mmap'd and returned to the kernel on free, so every step page-faults its working set back
in: `bench/malloc.py` measured 94 ms a step of the Shakespeare CPU preset on the 2-core machine
without these settings and 61 ms with them. Keeping freed memory in the process fixes it; glibc
reads these settings only at start-up, so the `jaxformer train` command restarts itself once with
them set.

The thresholds cannot keep every block: XLA runs a step on a worker thread, whose glibc arena
grows in heaps of at most 64 MiB, so a step whose temporaries exceed 64 MiB (the MoE Shakespeare
preset's 81 MB, any BERT-base or GPT-2-small step) still gets a fresh mmap every step, 4 KiB
page by 4 KiB page (19,750 page faults a step for that MoE). glibc's `hugetlb` tunable (2.35 and
later; older versions ignore it) backs malloc's memory with transparent huge pages, so such a
block faults in 2 MiB at a time: `bench/malloc.py` shows what each setting is worth.
"""

import os
import sys

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 32),  # serve big blocks from the heap, not fresh mmaps
    "MALLOC_TRIM_THRESHOLD_": str(1 << 32),  # and do not give freed memory back each step
    "MALLOC_TOP_PAD_": str(1 << 29),  # grow the heap in large steps
}
TUNABLES = "GLIBC_TUNABLES"
HUGE_PAGES = "glibc.malloc.hugetlb=1"  # madvise(MADV_HUGEPAGE) on malloc's memory
SETTING_NAMES = (*MALLOC_ENV, TUNABLES)  # every variable the restart may set
OPT_OUT = "JAXFORMER_KEEP_MALLOC"  # set to 1 to leave the allocator alone


def restart_with_malloc_settings(*, script: bool = False) -> None:
    """Re-exec this process with MALLOC_ENV set, when it is the `jaxformer` command (or, with
    `script`, any script's main program) on Linux and the settings are missing. Returns, doing
    nothing, otherwise: inside another program, a test, or when $JAXFORMER_KEEP_MALLOC is set."""
    if (not sys.platform.startswith("linux") or os.environ.get(OPT_OUT)
            or not (script or _launched_as_cli())):
        return
    env = malloc_env(os.environ)
    if env == dict(os.environ):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)


def malloc_env(environ) -> dict:
    """`environ` with MALLOC_ENV and the huge-page tunable added; values the user set are kept
    (an existing GLIBC_TUNABLES gets the tunable appended unless it sets hugetlb itself)."""
    env = {**environ, **{k: environ.get(k) or v for k, v in MALLOC_ENV.items()}}
    tunables = environ.get(TUNABLES, "")
    if "glibc.malloc.hugetlb=" not in tunables:
        env[TUNABLES] = f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES
    return env


def _launched_as_cli() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "jaxformer.__main__":  # python -m jaxformer
        return True
    return os.path.basename(sys.argv[0]) == "jaxformer"  # the console script
