"""Does jaxformer's compiled train step run a GPT-2-small-shaped model 1.3x as fast as HF
transformers with torch.optim.AdamW?

Prints the figures of docs/performance.md, "GPT-2 small: training step".

    python -m bench.train_throughput [--batch 4] [--seq 256] [--steps 3] [--repeats 3] [--no-hf]

GPT-2 small shape (124M parameters), random weights, float32, batch 4 x 256 tokens, AdamW with
global-norm clipping at 1.0 and weight decay 0.1, no dropout, on the same machine in one run.
Each side: a warm-up (compilation for jaxformer), then `--repeats` timings of `--steps` steps;
prints the median tokens/s of each, their ratio, and model FLOPs utilisation (6N + 12 L d T FLOPs
per token) against the float32 matmul peak measured in the same run, and the ceiling (HF's matmul
FLOPs at the fastest matmul rate measured: the most any implementation could gain; bench/common.py).
"""

import argparse
import os

import jax
import numpy as np

from bench.common import (Timings, ceiling_line, machine_line, matmul_peak, same_allocator,
                          time_calls, torch_matmul_flops)
from jaxformer.config import load_config
from jaxformer.models.counting import flops_per_token
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state, model_graphdef
from jaxformer.train.step import make_train_step


def batches(vocab: int, batch: int, seq: int, count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        tokens = rng.integers(0, vocab, (batch, seq + 1)).astype(np.int32)
        out.append({"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
                    "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
                    "segment_ids": np.ones((batch, seq), np.int32),
                    "loss_mask": np.ones((batch, seq), np.float32)})
    return out


def bench_jaxformer(args) -> tuple[float, Timings, object]:
    config = load_config(None, [f"model.max_seq_len={max(args.seq, 1024)}",
                                f"train.batch_size={args.batch}", f"train.seq_len={args.seq}",
                                "optimizer.warmup_steps=1", "optimizer.decay_steps=1000"])
    state = create_state(config)
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    data = [jax.device_put(b) for b in batches(config.model.vocab_size, args.batch, args.seq, 2)]
    holder = {"state": state}

    def run():
        for i in range(args.steps):
            holder["state"], metrics = step(holder["state"], data[i % 2])
        return metrics

    holder["state"], metrics = step(holder["state"], data[0])  # compile
    jax.block_until_ready(metrics)
    runs = time_calls(run, args.repeats)
    return args.batch * args.seq * args.steps / runs.median, runs, config.model


def gpt2_matmul_shapes(tokens: int) -> list[tuple[int, int, int]]:
    """GPT-2 small's matmuls at `tokens` rows: attention in and out, the MLP, the tied LM head."""
    return [(tokens, 768, 2304), (tokens, 768, 768), (tokens, 768, 3072), (tokens, 3072, 768),
            (tokens, 768, 50257), (2048, 2048, 2048)]


def bench_hf(args) -> tuple[float, Timings, int]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    data = [torch.as_tensor(b["tokens"], dtype=torch.long)
            for b in batches(50257, args.batch, args.seq, 2)]

    def one(ids):
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run():
        for i in range(args.steps):
            one(data[i % 2])

    one(data[0])  # warm-up
    runs = time_calls(run, args.repeats)
    return (args.batch * args.seq * args.steps / runs.median, runs,
            torch_matmul_flops(lambda: one(data[0])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median counts")
    parser.add_argument("--no-hf", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args()
    allocator = same_allocator()  # restarts once: glibc reads the settings at start-up

    print(machine_line())
    print(allocator)
    # One measured CPU peak serves the MFU figures and the ceiling (bench/common.py matmul_peak).
    peak, where = (matmul_peak(gpt2_matmul_shapes(args.batch * args.seq))
                   if jax.default_backend() == "cpu" else (None, ""))
    ours, our_times, model_config = bench_jaxformer(args)
    flops = flops_per_token(model_config, args.seq)
    mfu = f", MFU {ours * flops / peak:.1%} of the measured {peak / 1e9:.0f} GFLOP/s" if peak else ""
    print(f"jaxformer: {ours:.1f} tokens/s (runs: {our_times.runs()} s "
          f"for {args.steps} steps){mfu}", flush=True)
    if not args.no_hf:
        hf, hf_times, matmul_flops = bench_hf(args)
        hf_mfu = f", MFU {hf * flops / peak:.1%}" if peak else ""
        print(f"HF transformers + torch AdamW: {hf:.1f} tokens/s (runs: "
              f"{hf_times.runs()} s){hf_mfu}")
        print(f"ratio jaxformer / HF: {ours / hf:.2f}x (goal 1.3x)")
        if peak:
            print(ceiling_line(matmul_flops, args.batch * args.seq / hf, peak, where, goal=1.3))


if __name__ == "__main__":
    main()
