"""Waiting on subprocesses without timing assertions.

A test waits for an event (a file appears, a line is printed, the process exits), never for a
duration. The timeout here is only a safety net against a hung process: long enough that a
loaded 2-core machine running other builds never reaches it, so it cannot decide a test.
"""

import subprocess
import time
from collections.abc import Callable

SAFETY_TIMEOUT_S = 1800.0


def wait_for(condition: Callable[[], bool], *, what: str, process: subprocess.Popen | None = None,
             timeout: float = SAFETY_TIMEOUT_S, poll_s: float = 0.05) -> None:
    """Return once `condition()` holds. Fails if `process` exits first (showing its stderr, when
    it was piped) or, as a safety net, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            if condition():  # it happened just before the exit
                return
            err = process.stderr.read() if process.stderr else ""
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            raise AssertionError(f"the process exited ({process.returncode}) before {what}:\n"
                                 f"{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"safety timeout: still waiting for {what} after {timeout:.0f} s")
        time.sleep(poll_s)
