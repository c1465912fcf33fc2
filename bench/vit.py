"""Does jaxformer's ViT-B/16 forward and backward run 1.3x as fast as HF transformers'
ViTForImageClassification in PyTorch?

Prints the figures of docs/performance.md, "ViT-B/16: training step".

    python -m bench.vit [--batch 8] [--steps 3] [--repeats 3] [--no-hf]

The vit-base-patch16-224 shape (86.6M parameters, 1,000 labels), random weights, float32, a batch
of 8 random 224 x 224 images with random labels, no dropout, on the same machine in one run. One
timed step is the cross-entropy loss and the gradient of every parameter (no optimizer update):
for jaxformer a jitted `jax.value_and_grad`, for PyTorch `loss.backward()` after zeroing the
gradients. Each side: a warm-up (compilation for jaxformer), then `--repeats` timings of `--steps`
steps; prints the median images/s of each and their ratio, then the ceiling: HF's matmul FLOPs
(PyTorch's FlopCounterMode) at the fastest matmul rate measured in the run bound how much faster
any implementation of the same work could be (bench/common.py).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.common import (Timings, ceiling_line, machine_line, matmul_peak, time_calls,
                          torch_matmul_flops)
from jaxformer import load_model_config
from jaxformer.models import build_model
from jaxformer.tasks.losses import token_cross_entropy


def data(batch: int, labels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(batch, 224, 224, 3)).astype(np.float32),
            rng.integers(0, labels, size=batch).astype(np.int32))


def bench_jaxformer(args) -> tuple[float, Timings]:
    config = load_model_config("vit-base-patch16-224")
    graphdef, params = nnx.split(build_model(config, rngs=nnx.Rngs(0)), nnx.Param)
    images, labels = (jnp.asarray(a) for a in data(args.batch, config.num_labels))

    @jax.jit
    def step(params, images, labels):
        def loss(params):
            logits = nnx.merge(graphdef, params)(images).logits
            return jnp.mean(token_cross_entropy(logits, labels))
        return jax.value_and_grad(loss)(params)

    def run():
        for _ in range(args.steps):
            out = step(params, images, labels)
        return out

    jax.block_until_ready(step(params, images, labels))  # compile
    runs = time_calls(run, args.repeats)
    return args.batch * args.steps / runs.median, runs


def bench_hf(args) -> tuple[float, Timings, int]:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(num_labels=1000, hidden_dropout_prob=0.0,
                                                attention_probs_dropout_prob=0.0)).train()
    images, labels = data(args.batch, 1000)
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2)).contiguous()
    targets = torch.from_numpy(labels.astype(np.int64))

    def one():
        model.zero_grad(set_to_none=True)
        model(pixel_values=pixels, labels=targets).loss.backward()

    def run():
        for _ in range(args.steps):
            one()

    one()  # warm-up
    runs = time_calls(run, args.repeats)
    return args.batch * args.steps / runs.median, runs, torch_matmul_flops(one)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median counts")
    parser.add_argument("--no-hf", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args()

    print(machine_line())
    ours, our_times = bench_jaxformer(args)
    print(f"jaxformer: {ours:.2f} images/s (runs: {our_times.runs()} s "
          f"for {args.steps} steps of {args.batch} images)", flush=True)
    if not args.no_hf:
        hf, hf_times, flops = bench_hf(args)
        print(f"HF transformers (PyTorch {__import__('torch').__version__}): {hf:.2f} images/s "
              f"(runs: {hf_times.runs()} s)")
        print(f"ratio jaxformer / HF: {ours / hf:.2f}x (goal 1.3x)")
        tokens = args.batch * (1 + (224 // 16) ** 2)
        peak, where = matmul_peak([(tokens, 768, 768), (tokens, 768, 3072), (tokens, 3072, 768),
                                   (2048, 2048, 2048)])
        print(ceiling_line(flops, args.batch / hf, peak, where, goal=1.3))


if __name__ == "__main__":
    main()
