"""The training loop: data in, compiled steps, logs, evaluations, checkpoints, a plot and a sample.

Nothing here waits on the device between steps: metrics stay on the device and are fetched once
per log interval (and before each checkpoint, to check that the loss is still finite).
"""

import dataclasses
import functools
import math
import sys
import time
from pathlib import Path

import jax

from jaxformer.config import Config, with_vocab_size
from jaxformer.data import build_tokenizer, eval_batches, load_corpus, load_tokenizer, make_train_iterator
from jaxformer.errors import ConfigError, UserError
from jaxformer.parallel import ParallelPlan
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.eval import evaluate, make_eval_step
from jaxformer.train.metrics import Throughput
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.report import MetricsLog, plot_losses
from jaxformer.train.run_dir import (RunDir, check_same_run, ensure_writable, optimizer_changes,
                                     write_run_files)
from jaxformer.train.state import init_train_state, model_graphdef
from jaxformer.train.step import make_train_step
from jaxformer.train.stopping import StopSignals


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the run stopped without saving the bad state."""


@dataclasses.dataclass
class TrainResult:
    step: int  # optimizer steps done
    val_loss: float | None
    train_loss: float | None  # mean over the last log interval
    wall_s: float  # from the start of `train` to the end of the last step (sample excluded)
    tokens_per_s: float | None  # over the whole segment, compile and evaluations included
    sample: str | None = None
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a signal ended the run early


def place_batch(batch: dict) -> dict:
    """A host batch (numpy) onto the default device (the loop itself places through its plan)."""
    return jax.device_put(batch)


def devices_used(state) -> int:
    """How many devices the step runs on: those holding the parameters (1 without a mesh)."""
    return len(jax.tree.leaves(state.params)[0].sharding.device_set)


def prepare_run(config: Config, run: RunDir, say):
    """Corpus, tokenizer and the resolved config, all checked before any compute.

    The tokenizer saved in the run directory wins (a resumed run must encode as before);
    otherwise it is built from the corpus (and saved by `write_run_files` once the run can
    start). `model.vocab_size` is set from it, and `data.packing=null` is resolved from the
    corpus. A resumed run must keep the model and data sections of the saved config."""
    corpus = load_corpus(config.data.corpus)
    if (run.tokenizer).exists():
        tokenizer = load_tokenizer(run.tokenizer)
    else:
        tokenizer = build_tokenizer(config.data, corpus)
    config, changed = with_vocab_size(config, tokenizer.vocab_size)
    if changed:
        say(f"model.vocab_size set to {tokenizer.vocab_size}, the tokenizer's vocabulary size")
    if config.data.packing is None:
        packing = not corpus.is_single_text
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, packing=packing))
    check_same_run(run, config)
    return config, corpus, tokenizer


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
    return plan.create(state_init(config)), 0


def state_init(config: Config):
    """The pure function that makes a fresh train state from `train.seed`."""
    return functools.partial(init_train_state, config, jax.random.PRNGKey(config.train.seed))


class Window:
    """Host-side sums of the metrics since the last log line."""

    def __init__(self):
        self.pending: list[tuple[int, dict]] = []  # (optimizer step, device metrics)
        self.reset()

    def reset(self):
        self.loss_sum, self.count, self.last = 0.0, 0, {}

    def fetch(self, checkpoint_step: int | None, checkpoint_dir: Path, lr_now: float) -> None:
        """Bring pending metrics to the host; a non-finite loss stops the run."""
        if not self.pending:
            return
        steps, metrics = zip(*self.pending)
        self.pending = []
        for step, m in zip(steps, jax.device_get(list(metrics))):
            loss = float(m["loss"])
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint is step {checkpoint_step} in {checkpoint_dir}"
                        if checkpoint_step is not None else "no checkpoint was saved yet")
                raise NonFiniteLossError(
                    f"the loss became {loss} at step {step} (lr {float(m['lr']):.3g}, grad norm "
                    f"{float(m['grad_norm']):.3g}); stopped without saving; {kept}. Lower "
                    f"optimizer.lr (now {lr_now:g}), lengthen optimizer.warmup_steps or lower "
                    f"optimizer.grad_clip, then rerun to resume from it")
            self.loss_sum += loss
            self.count += 1
            self.last = {k: float(v) for k, v in m.items()}


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

    config, corpus, tokenizer = prepare_run(config, run, say)
    t, accum = config.train, config.optimizer.grad_accum_steps
    prompt = tokenizer.encode(t.sample_prompt) if t.sample_tokens else []  # a bad prompt fails now
    train_iterator = make_train_iterator(  # batch_size is global; each process gets its rows
        config.data, tokenizer, corpus, batch_size=t.batch_size,
        seq_len=t.seq_len, seed=t.seed, process_index=jax.process_index(),
        process_count=jax.process_count())
    val_batches = [plan.place(b) for b in eval_batches(
        config.data, tokenizer, corpus, batch_size=t.batch_size, seq_len=t.seq_len,
        num_batches=t.eval_batches, seed=0)] if t.eval_batches else []

    ensure_writable(run)
    checkpointer = Checkpointer(run.checkpoints, keep=t.keep_checkpoints, log=say)
    if plan.mesh.size > 1:
        say(plan.describe())
    state, start = restore_or_create(config, checkpointer, train_iterator, say, plan,
                                     hint=optimizer_changes(run, config))
    write_run_files(run, config, tokenizer)  # only now: a refused rerun leaves the run as it was
    graphdef = model_graphdef(config.model)
    # Bound to the plan: traced with its mesh and rules, so the model's sharding hints apply.
    train_step = plan.bind(make_train_step(graphdef, make_optimizer(config.optimizer), config,
                                           state_shardings=plan.shardings(state_init(config))))
    eval_step = plan.bind(make_eval_step(graphdef, config))
    log = MetricsLog(run.metrics, run.tensorboard, enabled=is_main)
    throughput = Throughput(config.model, t.seq_len, num_devices=devices_used(state))
    tokens_per_step = t.batch_size * t.seq_len * accum
    window, last_saved, val_loss, train_loss = Window(), start or None, None, None
    stopped_by = None

    def run_eval(step: int) -> float | None:
        if not val_batches:
            return None
        values = evaluate(eval_step, state.params, val_batches)
        log.write("eval", step, values)
        say(f"step {step}: val loss {values['val_loss']:.4f} (perplexity {values['val_ppl']:.2f})")
        return values["val_loss"]

    if start >= t.steps:
        say(f"{run.root} is already at step {start} >= train.steps={t.steps}: nothing to train "
            f"(raise train.steps to continue)")
    elif start == 0 and val_batches:
        val_loss = run_eval(0)  # the untrained model's loss: the plot's first point

    segment_start = time.perf_counter()
    if is_main and t.progress and start < t.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.steps, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)
    try:
        with StopSignals() as signals:
            throughput.reset()
            for step in range(start + 1, t.steps + 1):
                for _ in range(accum):
                    state, metrics = train_step(state, plan.place(next(train_iterator)))
                window.pending.append((step, metrics))
                if step == start + 1:  # the first step compiles: keep it out of tokens/s
                    jax.block_until_ready(metrics)
                    throughput.reset()
                else:
                    throughput.add(tokens_per_step)
                if bar is not None:
                    bar.update(1)
                checkpointer.poll()  # a failed background save stops the run now
                stop = signals.check(step, checkpointer)
                final = step == t.steps
                if step % t.log_every == 0 or final:
                    window.fetch(last_saved, run.checkpoints, config.optimizer.lr)
                    train_loss = window.loss_sum / max(window.count, 1)
                    rates = throughput.measure()
                    record = {"loss": train_loss, "ppl": math.exp(min(train_loss, 80.0)),
                              "grad_norm": window.last["grad_norm"], "lr": window.last["lr"],
                              **rates}
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
        if bar is not None:
            bar.close()
        log.close()
        checkpointer.close()
    end_step = int(state.step) // accum
    wall = time.perf_counter() - start_time
    segment_tokens = (end_step - start) * tokens_per_step
    result = TrainResult(step=end_step, val_loss=val_loss, train_loss=train_loss, wall_s=wall,
                         tokens_per_s=segment_tokens / max(time.perf_counter() - segment_start, 1e-9)
                         if segment_tokens else None, stopped_by=stopped_by)
    if is_main and stopped_by is None:
        plot_losses(run.metrics, run.plot, title=f"{run.root.name}: {config.model.num_layers} "
                    f"layers, d {config.model.d_model}")
        say(f"loss plot: {run.plot}")
    if stopped_by is None and t.sample_tokens:
        result.sample = write_sample(config, graphdef, state.params, tokenizer, prompt, say)
    return result


def write_sample(config: Config, graphdef, params, tokenizer, prompt: list[int], say) -> str:
    from flax import nnx

    from jaxformer.generate import generate_past_context

    t = config.train
    model = nnx.merge(graphdef, params)
    # nanoGPT's CPU preset samples more characters than its 64-token context holds.
    new = generate_past_context(model, prompt, t.sample_tokens, temperature=t.sample_temperature,
                                top_k=t.sample_top_k, seed=t.seed)
    text = tokenizer.decode(prompt + new)
    say(f"--- sample ({t.sample_tokens} tokens, temperature {t.sample_temperature}) ---\n{text}\n---")
    return text


__all__ = ["NonFiniteLossError", "TrainResult", "place_batch", "train"]
