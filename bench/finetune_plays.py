"""Fine-tuning a Shakespeare character model onto a play it never saw: how does each fine-tuning
mode compare in trainable parameters, memory, step time and held-out loss?

No row in docs/performance.md: the recipe is described in docs/fine-tuning.md, "Fine-tuning runs".

    python -m bench.finetune_plays [--root DIR] [--base-steps 2000] [--steps 300] [--only MODE ...]

Tiny Shakespeare is cut by play: The Winter's Tale (from "ARCHIDAMUS:" to the start of Measure
for Measure, 135,744 characters) is held out; a base model (the `shakespeare_char_cpu` recipe:
4 layers, d 128, 2,000 steps) trains on the rest. Then each fine-tuning mode trains on the first
90% of The Winter's Tale from the base's checkpoint for `--steps` steps, and every model is scored
on the play's last 10%: full fine-tuning, LoRA (query + value, and every linear layer), QLoRA (the
base stored NF4, adapters in bfloat16), the top layer only, and a soft prompt. For each: trainable
parameters, train-state memory (parameters, frozen weights and optimizer state), step time
(median over the logged windows, compilation excluded) and the held-out loss (every model on the
same consecutive 48-character windows). About 6 minutes on 2 cores.
"""

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import machine_line
from jaxformer.config import load_config
from jaxformer.data import load_corpus
from jaxformer.data.splits import split_stream
from jaxformer.train import load_run, train
from jaxformer.train.state import abstract_train_state

PLAY = ("The Winter's Tale", "\nARCHIDAMUS:\n", "\nDUKE VINCENTIO:\n")

MODES = {
    "full fine-tuning": [],
    "LoRA r=8, query + value": ["finetune.mode=lora", "finetune.lora_targets=[query,value]",
                                "optimizer.lr=3e-3"],
    "LoRA r=8, every linear layer": ["finetune.mode=lora", "optimizer.lr=3e-3",
                                     "finetune.lora_targets=[query,key,value,out,up,down]"],
    "QLoRA: NF4 base, bf16 adapters (every linear)": [
        "finetune.mode=lora", "finetune.quantize_base=nf4", "finetune.lora_dtype=bfloat16",
        "finetune.lora_targets=[query,key,value,out,up,down]", "optimizer.lr=3e-3"],
    "top layer only": ["finetune.mode=top_layers", "finetune.top_layers=1"],
    "soft prompt, 16 tokens": ["finetune.mode=soft_prompt", "finetune.soft_prompt_tokens=16",
                               "train.seq_len=48", "optimizer.lr=3e-2"],
}


def cut_corpus(root: Path) -> tuple[Path, Path]:
    text = load_corpus("tinyshakespeare").text
    start, end = text.index(PLAY[1]) + 1, text.index(PLAY[2]) + 1
    root.mkdir(parents=True, exist_ok=True)
    base, play = root / "without_winters_tale.txt", root / "winters_tale.txt"
    base.write_text(text[:start] + text[end:])
    play.write_text(text[start:end])
    return base, play


EVAL_WINDOW = 48  # every model scored on the same windows (the soft prompt leaves 48 of 64)


def held_out_loss(run: Path, play: Path) -> float:
    """Mean next-character loss over the play's validation split, in consecutive windows."""
    config, model, tokenizer = load_run(run, log=lambda *_: None)
    data = dataclasses.replace(config.data, corpus=str(play))
    stream = split_stream(data, tokenizer, load_corpus(str(play)), "val")
    seq = EVAL_WINDOW
    count = (len(stream) - 1) // seq
    x = jnp.asarray(stream[:count * seq].reshape(count, seq))
    y = jnp.asarray(stream[1:count * seq + 1].reshape(count, seq))
    graphdef, state = nnx.split(model)

    @jax.jit
    def nll(state, x, y):
        logits = nnx.merge(graphdef, state)(x).logits
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1).sum()

    return float(nll(state, x, y)) / (count * seq)


def step_seconds(run: Path, tokens_per_step: int) -> float:
    rates = [json.loads(line).get("tokens_per_s") for line in (run / "metrics.jsonl").open()]
    rates = [r for r in rates if r]
    return tokens_per_step / statistics.median(rates)


def state_memory(config) -> dict:
    state = abstract_train_state(config)
    size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
    return {"trainable": sum(x.size for x in jax.tree.leaves(state.params)),
            "bytes": size(state.params) + size(state.frozen) + size(state.opt_state),
            "optimizer_bytes": size(state.opt_state)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs/plays"))
    parser.add_argument("--base-steps", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--only", nargs="*", default=None, help="a subset of the modes")
    args = parser.parse_args()
    print(machine_line())
    base_text, play = cut_corpus(args.root)
    quiet = ["train.progress=false", "train.sample_tokens=0"]
    base = args.root / "base"
    if not (base / "config.yaml").exists():
        train(load_config("shakespeare_char_cpu", quiet + [
            f"data.corpus={base_text}", f"train.run_dir={base}", f"train.steps={args.base_steps}"]))
    base_config = load_config(base / "config.yaml")
    rows = [("base model, not fine-tuned", {"trainable": 0, "bytes": None}, None,
             held_out_loss(base, play))]
    for name, extra in MODES.items():
        if args.only and not any(o in name for o in args.only):
            continue
        slug = "".join(c if c.isalnum() else "_" for c in name.lower())[:40]
        run = args.root / slug
        overrides = quiet + [f"data.corpus={play}", f"train.run_dir={run}", f"finetune.base={base}",
                             f"train.steps={args.steps}", "optimizer.warmup_steps=20",
                             f"optimizer.decay_steps={args.steps}", "train.eval_every=100",
                             "train.checkpoint_every=1000", "train.log_every=25"] + extra
        config = load_config("shakespeare_char_cpu", overrides)
        train(config)
        memory = state_memory(config)
        tokens = config.train.batch_size * config.train.seq_len
        rows.append((name, memory, step_seconds(run, tokens), held_out_loss(run, play)))
    total = sum(x.size for x in jax.tree.leaves(abstract_train_state(base_config).params))
    print(f"\nheld-out play: {PLAY[0]} ({play.stat().st_size:,} characters); base trained "
          f"{base_config.train.steps} steps on the other {base_text.stat().st_size:,}; "
          f"fine-tuning {args.steps} steps of batch {base_config.train.batch_size}")
    print("| mode | trainable parameters | train state (MiB) | step (ms) | held-out loss | ppl |")
    print("|---|---|---|---|---|---|")
    for name, memory, step, loss in rows:
        mem = "-" if memory["bytes"] is None else f"{memory['bytes'] / 2**20:.2f}"
        t = "-" if step is None else f"{1000 * step:.1f}"
        share = f"{memory['trainable']:,} ({memory['trainable'] / total:.1%})"
        print(f"| {name} | {share} | {mem} | {t} | {loss:.4f} | {math.exp(loss):.2f} |")


if __name__ == "__main__":
    main()
