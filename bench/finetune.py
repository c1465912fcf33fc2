"""Does LoRA on a GPT-2-small-shaped model train 0.3% of the parameters, take at most 0.8x the
step time of full fine-tuning, and run 1.3x HF transformers + peft's tokens/s?

Prints the figures of docs/performance.md, "LoRA".

    python -m bench.finetune [--batch 4] [--seq 256] [--steps 2] [--repeats 3] [--no-hf]
    python -m bench.finetune --qlora    # also QLoRA: the base stored NF4, adapters in bfloat16

A GPT-2-small-shaped model (124M parameters, random weights, float32, batch 4 x 256 tokens,
AdamW, no dropout), every variant in one run on one machine. LoRA: rank 8, alpha 16, on the
query and value projections of every layer, the LoRA paper's choice (peft's reference side adapts
GPT-2's fused c_attn with rank 8, the same 294,912 parameters). Prints, for jaxformer full /
jaxformer LoRA / HF + peft LoRA: trainable parameters and their share, optimizer state bytes,
train-state bytes, XLA's compiled temporary bytes, step time and tokens/s (median of `--repeats`
timings of `--steps` steps after a warm-up), and the goals; then the ceiling (HF + peft's matmul
FLOPs at the fastest matmul rate measured: the most any implementation could gain;
bench/common.py).
"""

import argparse
import os

import jax

from bench.common import (ceiling_line, machine_line, matmul_peak, same_allocator, time_calls,
                          torch_matmul_flops)
from bench.train_throughput import batches, gpt2_matmul_shapes
from jaxformer.config import load_config
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state, model_graphdef
from jaxformer.train.step import make_train_step

LORA = ["finetune.mode=lora", "finetune.lora_rank=8", "finetune.lora_alpha=16",
        "finetune.lora_targets=[query,value]"]


def nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def bench_jaxformer(args, extra: list[str]) -> dict:
    config = load_config(None, [f"train.batch_size={args.batch}", f"train.seq_len={args.seq}",
                                "optimizer.warmup_steps=1", "optimizer.decay_steps=1000"] + extra)
    state = create_state(config)
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    data = [jax.device_put(b) for b in batches(config.model.vocab_size, args.batch, args.seq, 2)]
    compiled = step.lower(state, data[0]).compile()
    memory = compiled.memory_analysis()
    trainable = sum(x.size for x in jax.tree.leaves(state.params))
    frozen = sum(x.size for x in jax.tree.leaves(state.frozen))
    quantized = sum(x.size for _, x in _frozen_quantized(state.frozen))
    holder = {"state": state}

    def run():
        for i in range(args.steps):
            holder["state"], metrics = step(holder["state"], data[i % 2])
        return metrics

    holder["state"], metrics = step(holder["state"], data[0])
    jax.block_until_ready(metrics)
    runs = time_calls(run, args.repeats)
    median = runs.median
    total = trainable + frozen - quantized + _quantized_weights(config, holder["state"])
    return {"trainable": trainable, "total": total, "optimizer_bytes": nbytes(state.opt_state),
            "state_bytes": nbytes(holder["state"]),
            "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
            "step_s": median / args.steps, "tokens_per_s": args.batch * args.seq * args.steps / median,
            "times": runs}


def _frozen_quantized(frozen):
    from flax import nnx

    from jaxformer.nn.quantized import QuantizedWeight

    return [(p, v.get_value()) for p, v in nnx.to_flat_state(frozen) if isinstance(v, QuantizedWeight)]


def _quantized_weights(config, state) -> int:
    """Weights the quantized kernels stand for (their element count as float kernels)."""
    from flax import nnx

    from jaxformer.nn.quantized import QuantizedLinear

    model = nnx.merge(model_graphdef(config), state.params, state.frozen)
    return sum(m.num_weights for _, m in nnx.iter_modules(model) if isinstance(m, QuantizedLinear))


def bench_hf_peft(args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"],
                                             fan_in_fan_out=True, lora_dropout=0.0)).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.99), eps=1e-8,
                                  weight_decay=0.1)
    data = [torch.as_tensor(b["tokens"], dtype=torch.long)
            for b in batches(50257, args.batch, args.seq, 2)]

    def one(ids):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run():
        for i in range(args.steps):
            one(data[i % 2])

    one(data[0])
    runs = time_calls(run, args.repeats)
    median = runs.median
    matmul_flops = torch_matmul_flops(lambda: one(data[0]))
    count = sum(p.numel() for p in trainable)
    moments = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                  for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    return {"trainable": count, "total": sum(p.numel() for p in model.parameters()),
            "optimizer_bytes": moments, "state_bytes": None, "temp_bytes": None,
            "step_s": median / args.steps,
            "tokens_per_s": args.batch * args.seq * args.steps / median, "times": runs,
            "matmul_flops": matmul_flops}


def row(name, r) -> str:
    mb = lambda b: "-" if b is None else f"{b / 2**20:,.1f}"
    return (f"| {name} | {r['trainable']:,} ({r['trainable'] / r['total']:.3%}) | "
            f"{mb(r['optimizer_bytes'])} | {mb(r['state_bytes'])} | {mb(r['temp_bytes'])} | "
            f"{r['step_s']:.2f} | {r['tokens_per_s']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median counts")
    parser.add_argument("--no-hf", action="store_true", help="skip HF transformers + peft")
    parser.add_argument("--qlora", action="store_true", help="also QLoRA (NF4 base, bf16 adapters)")
    args = parser.parse_args()
    allocator = same_allocator()  # restarts once: glibc reads the settings at start-up

    print(machine_line())
    print(allocator)
    results = {"jaxformer full fine-tuning": bench_jaxformer(args, [])}
    results["jaxformer LoRA r=8 (query, value)"] = bench_jaxformer(args, LORA)
    if args.qlora:
        results["jaxformer QLoRA (NF4 base, bf16 adapters)"] = bench_jaxformer(
            args, LORA + ["finetune.quantize_base=nf4", "finetune.lora_dtype=bfloat16"])
    if not args.no_hf:
        results["HF transformers + peft LoRA r=8 (c_attn)"] = bench_hf_peft(args)
    print("| run | trainable | optimizer state MiB | train state MiB | XLA temp MiB | step s | tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(row(name, r))
    full = results["jaxformer full fine-tuning"]
    lora = results["jaxformer LoRA r=8 (query, value)"]
    share = lora["trainable"] / lora["total"]
    print(f"trainable share {share:.3%} (goal <= 0.3%): {'met' if share <= 0.003 else 'NOT met'}")
    ratio_opt = lora["optimizer_bytes"] / full["optimizer_bytes"]
    print(f"optimizer state {ratio_opt:.3%} of full fine-tuning's (trainable share {share:.3%})")
    ratio = lora["step_s"] / full["step_s"]
    print(f"LoRA step time / full: {ratio:.2f}x (goal <= 0.8x): {'met' if ratio <= 0.8 else 'NOT met'}")
    if not args.no_hf:
        hf = results["HF transformers + peft LoRA r=8 (c_attn)"]
        speed = lora["tokens_per_s"] / hf["tokens_per_s"]
        print(f"LoRA tokens/s / HF + peft: {speed:.2f}x (goal >= 1.3x): "
              f"{'met' if speed >= 1.3 else 'NOT met'}")
        print(ceiling_line(hf["matmul_flops"], hf["step_s"],
                           *matmul_peak(gpt2_matmul_shapes(args.batch * args.seq)), goal=1.3))
    for name, r in results.items():
        print(f"{name}: runs {r['times'].runs()} s for {args.steps} steps")


if __name__ == "__main__":
    main()
