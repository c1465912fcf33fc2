"""A blocking start-up call that must end within a time limit, whose C++ output stays off the
terminal unless something went wrong.

`jax.distributed.initialize` cannot be interrupted from Python, and when its connection fails XLA
ends the process (LOG(FATAL), a page of C++ stack trace) after JAX's own time-out. So JAX is given
a longer time-out than ours, and a watchdog thread ends the process at ours with one line (JAX's
call releases the GIL, so the thread runs). Meanwhile whatever reaches file descriptor 2 (JAX's
and XLA's messages, a stack trace) goes to a log file: copied back to stderr when the call
returns, named in the one line otherwise (when not empty).
"""

import os
import sys
import tempfile
import threading
from collections.abc import Callable

EXIT_STATUS = 2  # the CLI's status for errors that are the user's to fix


def call_within(timeout_s: float, call: Callable[[], object], failure: Callable[[], str]):
    """`call()`, or the process ends after `timeout_s` with "jaxformer: error: {failure()}"."""
    fd, log_path = tempfile.mkstemp(prefix="jaxformer-start-", suffix=".log")
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    done = threading.Event()

    def watch():
        if not done.wait(timeout_s):
            output = f" (JAX's output: {log_path})"
            if not os.path.getsize(log_path):
                os.unlink(log_path)
                output = ""
            os.write(terminal, f"jaxformer: error: {failure()}{output}\n".encode())
            os._exit(EXIT_STATUS)

    threading.Thread(target=watch, name="jaxformer-start-watchdog", daemon=True).start()
    try:
        return call()
    finally:
        done.set()
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
        with open(log_path, "rb") as log:
            captured = log.read()
        os.unlink(log_path)
        if captured:
            with os.fdopen(os.dup(2), "wb") as stderr:
                stderr.write(captured)
