"""`train.profile_steps`: a `jax.profiler` trace of a few training steps, in the run directory.

The trace (run_dir/profile/plugins/profile/<time>/*.xplane.pb and *.trace.json.gz) opens in
TensorBoard's profile plugin, xprof, or Perfetto (the .trace.json.gz). It covers the host side
(Python, dispatch, the input pipeline, transfers) and the XLA executions of those steps, so it
shows where a step's time goes. It starts after `train.profile_start` steps, not at step 0: the
first call compiles, which would swamp the picture.
"""

from pathlib import Path

import jax


class StepProfiler:
    def __init__(self, directory: Path, start: int, steps: int, say):
        self.directory, self.start, self.stop, self.say = directory, start, start + steps, say
        self.active = False
        self.enabled = steps > 0 and jax.process_index() == 0

    def before_call(self, step: int) -> None:
        """Called before the train call that runs step + 1."""
        if self.enabled and not self.active and self.start <= step < self.stop:
            jax.profiler.start_trace(str(self.directory))
            self.active, self.first = True, step

    def after_call(self, step: int, outputs) -> None:
        """Called with the step count after the call; ends the trace once past the last step."""
        if self.active and step >= self.stop:
            jax.block_until_ready(outputs)  # the trace holds the steps' device time too
            self.close()
            self.say(f"profile of steps {self.first + 1}-{step}: {self.directory} (TensorBoard's "
                     f"profile plugin, xprof, or Perfetto for the .trace.json.gz)")

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active, self.enabled = False, False
