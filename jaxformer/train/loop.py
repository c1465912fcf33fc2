"""The training loop: data in, compiled steps, logs, evaluations, checkpoints, a plot and the
task's end-of-run report (a sample of text for a language model).

It is written once for every model family: the run's task (`jaxformer.tasks`) supplies the data,
the loss and the report; the registry builds the model. Nothing here waits on the device between
steps: metrics stay on the device and are fetched once per log interval (and before each
checkpoint, to check that the loss is still finite).
"""

import dataclasses
import functools
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxformer.config import Config
from jaxformer.errors import ConfigError, UserError
from jaxformer.parallel import ParallelPlan
from jaxformer.tasks import make_task
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.eval import evaluate, make_eval_step
from jaxformer.train.metrics import Throughput
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.profile import StepProfiler
from jaxformer.train.report import MetricsLog, plot_losses
from jaxformer.train.run_dir import (RunDir, check_same_run, ensure_writable, optimizer_changes,
                                     write_adapter, write_run_files)
from jaxformer.train.state import init_train_state, model_graphdef
from jaxformer.train.step import make_train_step
from jaxformer.train.stopping import StopSignals
from jaxformer.train.warm_start import (create_from_source, prepare_run_dir, reference_model,
                                       warm_start_source)


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the run stopped without saving the bad state."""


@dataclasses.dataclass
class TrainResult:
    step: int  # optimizer steps done
    val_loss: float | None
    train_loss: float | None  # mean over the last log interval
    wall_s: float  # from the start of `train` to the end of the last step (sample excluded)
    tokens_per_s: float | None  # over the whole segment, compile and evaluations included
    sample: str | None = None  # the language-model task's sample (report["sample"])
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a signal ended the run early
    report: dict = dataclasses.field(default_factory=dict)  # the task's end-of-run report


def place_batch(batch: dict) -> dict:
    """A host batch (numpy) onto the default device (the loop itself places through its plan)."""
    return jax.device_put(batch)


def devices_used(state) -> int:
    """How many devices the step runs on: those holding the parameters (1 without a mesh)."""
    return len(jax.tree.leaves(state.params)[0].sharding.device_set)


def prepare_run(config: Config, run: RunDir, say):
    """The task's data and the resolved config, all checked before any compute (nothing is
    written but a fine-tuning run's copy of its base run's tokenizer: `write_run_files` writes the
    rest once the run is known to be able to start). A resumed run must keep the model, task,
    data and finetune sections of the saved config."""
    task = make_task(config)
    prepare_run_dir(config, run)  # a run started from another run reuses its tokenizer
    config = task.prepare(run, say)
    check_same_run(run, config)
    if task.needs_reference:  # DPO: the starting weights, used once and dropped
        task.set_reference(reference_model(config))
    return config, task


def _stack(batches: list[dict]) -> dict:
    return {name: np.stack([b[name] for b in batches]) for name in batches[0]}


def next_batch(iterator, accum: int, steps: int | None = None) -> dict:
    """One call's host batch: a batch, or `accum` of them stacked on a new leading axis (gradient
    accumulation); with `steps` (train.steps_per_call > 1), that many steps' batches stacked on a
    further leading axis."""
    def one_step():
        return next(iterator) if accum == 1 else _stack([next(iterator) for _ in range(accum)])

    return one_step() if steps is None else _stack([one_step() for _ in range(steps)])


def steps_in_call(step: int, t) -> int:
    """How many steps the next call runs after `step`: up to `train.steps_per_call`, stopping at
    the next step that logs, evaluates, checkpoints or ends the run (the loop acts between
    calls)."""
    boundary = step + 1
    while not (boundary % t.log_every == 0 or boundary % t.eval_every == 0
               or boundary % t.checkpoint_every == 0 or boundary >= t.steps):
        boundary += 1
    return min(t.steps_per_call, boundary - step)


def check_batch(batch: dict, spec: dict, rows: int) -> None:
    """The data pipeline's first batch against the task's `batch_spec` (this process's rows)."""
    for name, want in spec.items():
        got = batch.get(name)
        shape = (rows, *want.shape[1:])
        if got is None or tuple(got.shape) != shape or np.dtype(got.dtype) != np.dtype(want.dtype):
            found = "missing" if got is None else f"{got.dtype}{list(got.shape)}"
            raise UserError(f"the data pipeline's batch entry {name!r} is {found}, but the task "
                            f"needs {np.dtype(want.dtype)}{list(shape)}")


def restore_or_create(config: Config, checkpointer: Checkpointer, data_iterator, say, plan: ParallelPlan,
                      hint: str = ""):
    """The state to start from: the latest usable checkpoint (with the iterator restored in
    place), or a fresh one. Honors `train.resume` (see TrainLoopConfig). Either way it lands
    sharded on `plan`'s mesh, whatever mesh wrote the checkpoint. `hint` ends the message of a
    checkpoint whose structure does not match."""
    resume = config.train.resume
    if resume is False and checkpointer.latest_step() is not None:
        raise ConfigError(
            f"{checkpointer.directory} already holds checkpoints and train.resume=false: "
            f"use a new train.run_dir, or train.resume=true to continue")
    if resume is not False:
        state, step = checkpointer.restore_latest(plan.abstract(state_init(config)), data_iterator,
                                                  hint=hint)
        if state is not None:
            say(f"resuming from step {step} ({checkpointer.directory / str(step)})")
            return state, step
        if resume is True:
            raise UserError(f"train.resume=true but {checkpointer.directory} holds no readable "
                            f"checkpoint: drop train.resume to start afresh")
    if warm_start_source(config) is not None:  # finetune.base or train.init_from
        return create_from_source(config, plan, say), 0
    return plan.create(state_init(config)), 0


def state_init(config: Config):
    """The pure function that makes a fresh train state from `train.seed`."""
    return functools.partial(init_train_state, config, jax.random.PRNGKey(config.train.seed))


class Window:
    """Host-side sums of the metrics since the last log line."""

    def __init__(self):
        # (first optimizer step, steps in the call or None for one unstacked step, device metrics)
        self.pending: list[tuple[int, int | None, dict]] = []
        self.reset()

    def reset(self):
        self.sums, self.count, self.last = {}, 0, {}

    def fetch(self, checkpoint_step: int | None, checkpoint_dir: Path, lr_now: float) -> None:
        """Bring pending metrics to the host; a non-finite loss stops the run."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        fetched = jax.device_get([metrics for _, _, metrics in pending])
        per_step = []
        for (first, count, _), metrics in zip(pending, fetched):
            if count is None:
                per_step.append((first, metrics))
            else:  # stacked [count]: one entry per step
                per_step += [(first + i, {k: v[i] for k, v in metrics.items()}) for i in range(count)]
        for step, m in per_step:
            loss = float(m["loss"])
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint is step {checkpoint_step} in {checkpoint_dir}"
                        if checkpoint_step is not None else "no checkpoint was saved yet")
                raise NonFiniteLossError(
                    f"the loss became {loss} at step {step} (lr {float(m['lr']):.3g}, grad norm "
                    f"{float(m['grad_norm']):.3g}); stopped without saving; {kept}. Lower "
                    f"optimizer.lr (now {lr_now:g}), lengthen optimizer.warmup_steps or lower "
                    f"optimizer.grad_clip, then rerun to resume from it")
            for name, value in m.items():
                self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.count += 1
            self.last = {k: float(v) for k, v in m.items()}

    def record(self) -> dict:
        """Means over the window of the loss and the task's metrics; the last grad norm and lr."""
        means = {name: total / max(self.count, 1) for name, total in self.sums.items()}
        return {**means, "grad_norm": self.last.get("grad_norm"), "lr": self.last.get("lr")}


def train(config: Config) -> TrainResult:
    """Train as `config` says, in `config.train.run_dir`, resuming if it holds a checkpoint.
    The state and batches are laid out on the mesh of `config.mesh` (all devices by default)."""
    start_time = time.perf_counter()
    plan = ParallelPlan.from_config(config.mesh)
    t = config.train
    is_main = jax.process_index() == 0
    run = RunDir(Path(t.run_dir))
    bar = None

    def say(message: str) -> None:
        if is_main:
            (bar.write if bar is not None else print)(message, file=sys.stdout)
            sys.stdout.flush()

    config, task = prepare_run(config, run, say)
    t, accum = config.train, config.optimizer.grad_accum_steps
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    train_iterator = task.train_iterator(**shard)  # batch_size is global; each process its rows
    val_batches = [plan.place(b) for b in task.eval_batches(**shard)]

    ensure_writable(run)
    checkpointer = Checkpointer(run.checkpoints, keep=t.keep_checkpoints, log=say)
    if plan.mesh.size > 1:
        say(plan.describe())
    state, start = restore_or_create(config, checkpointer, train_iterator, say, plan,
                                     hint=optimizer_changes(run, config))
    write_run_files(run, config, task)  # only now: a refused rerun leaves the run as it was
    graphdef = model_graphdef(config)
    # Bound to the plan: traced with its mesh and rules, so the model's sharding hints apply.
    train_step = plan.bind(make_train_step(graphdef, make_optimizer(config.optimizer), config,
                                           task, state_shardings=plan.shardings(state_init(config))))
    eval_step = plan.bind(make_eval_step(graphdef, task))
    log = MetricsLog(run.metrics, run.tensorboard, enabled=is_main)
    throughput = Throughput(config.model, t.seq_len, num_devices=devices_used(state))
    tokens_per_step = task.tokens_per_batch(t.batch_size) * accum
    window, last_saved, val_loss, train_loss = Window(), start or None, None, None
    stopped_by = None

    def run_eval(step: int) -> float | None:
        if not val_batches:
            return None
        values = evaluate(eval_step, state.params, state.frozen, val_batches, task)
        log.write("eval", step, values)
        extra = ", ".join(f"{name.removeprefix('val_')} {value:.4g}" for name, value in values.items()
                          if name != "val_loss")
        say(f"step {step}: val loss {values['val_loss']:.4f}" + (f" ({extra})" if extra else ""))
        return values["val_loss"]

    if start >= t.steps:
        say(f"{run.root} is already at step {start} >= train.steps={t.steps}: nothing to train "
            f"(raise train.steps to continue)")
    elif start == 0 and val_batches:
        val_loss = run_eval(0)  # the untrained model's loss: the plot's first point

    segment_start = time.perf_counter()
    if is_main and t.progress and start < t.steps:
        from tqdm.auto import tqdm  # only for a progress bar on a terminal

        bar = tqdm(total=t.steps, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)
    profiler = StepProfiler(run.root / "profile", t.profile_start, t.profile_steps, say)
    try:
        with StopSignals() as signals:
            throughput.reset()
            step, multi = start, t.steps_per_call > 1
            while step < t.steps:
                count = steps_in_call(step, t)
                host_batch = next_batch(train_iterator, accum, count if multi else None)
                leading = int(multi) + int(accum > 1)  # axes before the batch rows
                if step == start:
                    check_batch(jax.tree.map(lambda x: x[(0,) * leading], host_batch),
                                task.batch_spec(t.batch_size), t.batch_size // jax.process_count())
                profiler.before_call(step)
                state, metrics = train_step(state, plan.place(host_batch, leading_axes=leading))
                window.pending.append((step + 1, count if multi else None, metrics))
                if step == start:  # the first call compiles: keep it out of tokens/s
                    jax.block_until_ready(metrics)
                    throughput.reset()
                else:
                    throughput.add(tokens_per_step * count)
                stop = None
                for _ in range(count):
                    step += 1
                    if bar is not None:
                        bar.update(1)
                    stop = signals.check(step, checkpointer) or stop  # every process, every step
                profiler.after_call(step, metrics)
                checkpointer.poll()  # a failed background save stops the run now
                final = step == t.steps
                if step % t.log_every == 0 or final:
                    window.fetch(last_saved, run.checkpoints, config.optimizer.lr)
                    rates = throughput.measure()
                    record = window.record()
                    train_loss = record["loss"]
                    record = {"loss": train_loss, "ppl": math.exp(min(train_loss, 80.0)),
                              **{k: v for k, v in record.items() if k != "loss"}, **rates}
                    log.write("train", step, record)
                    window.reset()
                    if bar is not None:
                        bar.set_postfix(loss=f"{train_loss:.4f}",
                                        tok_s=f"{rates['tokens_per_s']:.0f}")
                    elif is_main:
                        mfu = f", MFU {rates['mfu']:.1%}" if rates["mfu"] is not None else ""
                        say(f"step {step}: loss {train_loss:.4f}, lr {record['lr']:.3g}, "
                            f"{rates['tokens_per_s']:.0f} tokens/s{mfu}")
                if step % t.eval_every == 0 or final:
                    val_loss = run_eval(step)
                    throughput.reset()  # evaluation time is not training throughput
                if step % t.checkpoint_every == 0 or final or stop:
                    window.fetch(last_saved, run.checkpoints, config.optimizer.lr)
                    checkpointer.save(step, state, train_iterator, wait=bool(stop))
                    last_saved = step
                if stop:
                    stopped_by = stop
                    say(f"stopped by {stopped_by} at step {step}: checkpoint saved in "
                        f"{run.checkpoints / str(step)}; rerun the same command to continue")
                    break
            checkpointer.wait()
    finally:
        profiler.close()
        if bar is not None:
            bar.close()
        log.close()
        checkpointer.close()
    end_step = int(state.step)
    wall = time.perf_counter() - start_time
    segment_tokens = (end_step - start) * tokens_per_step
    result = TrainResult(step=end_step, val_loss=val_loss, train_loss=train_loss, wall_s=wall,
                         tokens_per_s=segment_tokens / max(time.perf_counter() - segment_start, 1e-9)
                         if segment_tokens else None, stopped_by=stopped_by)
    if is_main and stopped_by is None:
        size = getattr(config.model, "num_layers", None)
        plot_losses(run.metrics, run.plot, title=f"{run.root.name}: {config.model.family}"
                    + (f", {size} layers" if size else ""))
        say(f"loss plot: {run.plot}")
    if stopped_by is None:
        model = nnx.merge(graphdef, state.params, state.frozen)
        result.report = task.report(model, say)
        result.sample = result.report.get("sample")
        write_adapter(run, model, config, say)  # a LoRA run writes its adapter alone
    return result


__all__ = ["NonFiniteLossError", "TrainResult", "place_batch", "train"]
