"""Stopping on SIGTERM / SIGINT with a checkpoint saved first, at a step every process agrees on.

One process: a handler sets a flag; the loop checks it after each step, saves, and exits.

Several processes (`jax.distributed`): a signal reaches one process, or several at different steps,
while the others keep going; each deciding alone would have them save different steps and wait
for each other forever. JAX's preemption service (set up by `jax.distributed.initialize`) catches
SIGTERM itself, tells the coordinator, and `reached_preemption(step)` (orbax's wrapper over
`multihost_utils.reached_preemption_sync_point`, called at every step) turns True on every process
at the same step. So SIGTERM is left to JAX, and SIGINT (Ctrl-C) is passed on to it as a SIGTERM.
"""

import os
import signal
import threading

import jax


class StopSignals:
    """`with StopSignals() as signals:` ... `signals.check(step, checkpointer)` after each step.
    A second signal of the same kind acts at once (one process)."""

    def __init__(self):
        self.received: str | None = None
        self.previous = {}
        self.agreed = jax.process_count() > 1  # stop where the processes agree

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in ((signal.SIGINT,) if self.agreed else (signal.SIGINT, signal.SIGTERM)):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received:  # asked twice: stop now
            signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.received = signal.Signals(signum).name
        if self.agreed:  # JAX's preemption notifier listens for SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)

    def check(self, step: int, checkpointer) -> str | None:
        """The signal's name if the run stops after `step`, else None. With several processes,
        every one must call this at every step (it is how they agree)."""
        if self.agreed:
            return "SIGTERM" if checkpointer.reached_preemption(step) else None
        return self.received

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
