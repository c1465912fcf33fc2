"""Trained in this process, does the Shakespeare character recipe reach nanoGPT's validation loss,
in what wall time, and (with --phases) where does that time go?

Prints the figures of docs/performance.md, "The Shakespeare recipe" (the table of phases, with
--phases, and the step's compute alone below it); the comparison with PyTorch, each side a whole
command, is bench/shakespeare_vs_torch.py.

    python -m bench.shakespeare                                   # validation loss, wall time
    python -m bench.shakespeare --phases                          # and the time of each phase
    python -m bench.shakespeare --phases train.steps_per_call=10  # any preset overrides

Trains `shakespeare_char_cpu` (4 layers, 4 heads, d 128, context 64, batch 12, 2,000 steps) from
scratch in a fresh run directory through `jaxformer.train.train`, under the allocator settings of
`jaxformer train`, and prints the validation loss against nanoGPT's published 1.88 and the wall
time: from the config to the last step, compilation, data, evaluations and checkpoints included;
the imports and the sample and plot after the last step are shown apart.

With --phases, timers wrap the loop's parts (nothing in the library changes): start-up (data,
tokenizer, state creation), the first call (compilation), evaluations, checkpoint saves, the
report (sample) and loss plot, and the training steps. Then, in the same process, the pure
compute of one step: the same train step over device-resident batches, `--scan` steps per
compiled call, so that neither Python, dispatch, nor the input pipeline is in it. The steps' time
minus steps x that compute is the per-step host overhead (Python, dispatch, the input pipeline,
metric transfers).
"""

import argparse
import dataclasses
import functools
import tempfile
import time

START = time.perf_counter()
if __name__ == "__main__":
    from jaxformer.train.host import restart_with_malloc_settings

    restart_with_malloc_settings(script=True)  # as `jaxformer train` does (see host.py)
import jax  # noqa: E402

import jaxformer.train.loop as loop  # noqa: E402
from bench.common import machine_line, time_calls  # noqa: E402
from jaxformer.config import load_config  # noqa: E402
from jaxformer.models.counting import flops_per_token  # noqa: E402
from jaxformer.train.checkpoint import Checkpointer  # noqa: E402
from jaxformer.train.metrics import measured_cpu_peak  # noqa: E402
from jaxformer.train.state import create_state  # noqa: E402

IMPORT_S = time.perf_counter() - START
MAKE_TRAIN_STEP = loop.make_train_step  # kept: the pure-step timing builds its own step
NANOGPT_VAL_LOSS = 1.88  # nanoGPT's published figure for this recipe


class Phases:
    """Seconds and calls of each phase of a run."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, name: str, fn, sync: bool = False):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if sync:
                jax.block_until_ready(out)
            self.add(name, time.perf_counter() - start)
            return out
        return timed


def instrument(phases: Phases):
    """Wrap the loop's parts; returns the holder of the compiled train step the run builds."""
    loop.prepare_run = phases.wrap("start-up: data, tokenizer", loop.prepare_run)
    loop.restore_or_create = phases.wrap("start-up: state", loop.restore_or_create, sync=True)
    loop.evaluate = phases.wrap("evaluation", loop.evaluate)
    loop.plot_losses = phases.wrap("loss plot", loop.plot_losses)
    Checkpointer.save = phases.wrap("checkpoint saves (blocking part)", Checkpointer.save)
    Checkpointer.wait = phases.wrap("checkpoint saves (blocking part)", Checkpointer.wait)
    built = {}

    def make(*args, **kwargs):
        step = MAKE_TRAIN_STEP(*args, **kwargs)
        built["args"] = (args, kwargs)
        first = {"done": False}

        def call(state, batch):
            if first["done"]:
                return step(state, batch)
            start = time.perf_counter()
            out = jax.block_until_ready(step(state, batch))
            phases.add("first call (compilation)", time.perf_counter() - start)
            first["done"] = True
            return out
        return call

    loop.make_train_step = make
    timed_prepare = loop.prepare_run

    def prepare(*args, **kwargs):  # the task's report (sample) is timed too
        config, task = timed_prepare(*args, **kwargs)
        task.report = phases.wrap("report (sample)", task.report)
        built["config"], built["task"] = config, task
        return config, task
    loop.prepare_run = prepare
    return built


def pure_step_seconds(built: dict, scan: int, repeats: int) -> float:
    """Seconds per step of the compiled step alone: `scan` steps per call on batches already on
    the device, the state from a fresh init (shapes are what matter)."""
    config, task = built["config"], built["task"]
    config = config.replace(train=dataclasses.replace(config.train, steps_per_call=scan))
    (graphdef, tx, _, _), kwargs = built["args"]
    step = MAKE_TRAIN_STEP(graphdef, tx, config, task, **kwargs)
    state = create_state(config)
    iterator = task.train_iterator(process_index=0, process_count=1)
    batches = jax.device_put(loop.next_batch(iterator, 1, scan))
    holder = {"state": step(state, batches)[0]}  # compile

    def run():
        holder["state"], metrics = step(holder["state"], batches)
        return metrics
    return time_calls(run, repeats).median / scan


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="preset overrides")
    parser.add_argument("--phases", action="store_true",
                        help="time each phase of the run, then the step's compute alone")
    parser.add_argument("--scan", type=int, default=50,
                        help="with --phases: steps per call for the step's compute alone")
    parser.add_argument("--repeats", type=int, default=5,
                        help="with --phases: timed calls of that step; the median counts")
    args = parser.parse_args()
    print(machine_line())
    phases = Phases() if args.phases else None
    built = instrument(phases) if phases else {}
    with tempfile.TemporaryDirectory(prefix="jaxformer-bench-") as tmp:
        config = load_config("shakespeare_char_cpu", [f"train.run_dir={tmp}/run",
                                                      "train.progress=false", *args.overrides])
        start = time.perf_counter()
        result = loop.train(config)
        wall = time.perf_counter() - start
    summary(config, result, wall, args.overrides)
    if phases:
        phase_table(phases, built, result, wall, args)


def summary(config, result, wall: float, overrides: list[str]) -> None:
    steps, loss = result.step, result.val_loss
    print(f"\nshakespeare_char_cpu: {steps} iterations, batch {config.train.batch_size} x "
          f"{config.train.seq_len} tokens, overrides: {' '.join(overrides) or 'none'}")
    print(f"  val loss          {loss:.4f}   (nanoGPT: {NANOGPT_VAL_LOSS}; target <= "
          f"{NANOGPT_VAL_LOSS}: {'met' if loss <= NANOGPT_VAL_LOSS else 'NOT met'})")
    print(f"  train wall time   {result.wall_s:.1f} s")
    print(f"  tokens/s          {result.tokens_per_s:.0f}   (average over the run, evaluations "
          f"and compilation included)")
    print(f"  ms per iteration  {1000 * result.wall_s / max(steps, 1):.1f}")
    print(f"  imports           {IMPORT_S:.1f} s; sample + plot {wall - result.wall_s:.1f} s")


def phase_table(phases: Phases, built: dict, result, wall: float, args) -> None:
    per_step = pure_step_seconds(built, args.scan, args.repeats)
    steps = result.step
    accounted = sum(phases.seconds.values())
    loop_rest = wall - accounted
    compute = per_step * (steps - 1)
    print(f"\n{'phase':42s} {'seconds':>8s} {'calls':>6s} {'share':>6s}")
    rows = [("imports (jax, jaxformer)", IMPORT_S, 1), *[(name, s, phases.calls[name])
                                                          for name, s in phases.seconds.items()],
            ("training steps after the first", loop_rest, steps - 1)]
    total = IMPORT_S + wall
    for name, seconds, calls in rows:
        print(f"{name:42s} {seconds:8.2f} {calls:6d} {seconds / total:6.1%}")
    print(f"{'total (imports + train())':42s} {total:8.2f}")
    config = built["config"]
    flops = flops_per_token(config.model, config.train.seq_len) * config.train.batch_size * \
        config.train.seq_len
    peak = measured_cpu_peak()
    print(f"\ncompute of one step alone ({args.scan} steps per call, device-resident batches, "
          f"median of {args.repeats}): {per_step * 1e3:.2f} ms = {flops / per_step / 1e9:.1f} "
          f"GFLOP/s, {flops / per_step / peak:.0%} of the {peak / 1e9:.0f} GFLOP/s a 2048 x 2048 "
          f"float32 matmul reaches here; {steps} steps of it alone: {per_step * steps:.1f} s")
    print(f"the steps after the first: {loop_rest:.2f} s = {compute:.2f} s compute + "
          f"{loop_rest - compute:.2f} s host overhead ({(loop_rest - compute) / (steps - 1) * 1e3:.2f}"
          f" ms per step: Python, dispatch, the input pipeline, metric transfers)")


if __name__ == "__main__":
    main()
