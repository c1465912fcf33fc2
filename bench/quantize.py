"""What do int8, int4 and NF4 weight-only quantization save in bytes, cost in perplexity, and do
to batch-1 decoding speed, against float32?

Prints the figures of docs/performance.md, "Quantization".

    python -m bench.quantize [--run DIR] [--group-size 64] [--repeats 3] [--skip-decode]

In one run on one machine:

1. GPT-2 small shape (124M, random weights): the bytes of the stored weights and batch-1 greedy
   decoding speed (16-token prompt, `--new-tokens` new tokens, median of `--repeats`; each run's
   time is the one `decode` reports, prefill and decoding without compilation), which is
   memory-bound, so fewer bytes per weight should mean more tokens/s.
2. A trained Shakespeare character model (`--run`, trained with the `shakespeare_char_cpu` preset
   if the directory holds no run): perplexity on the whole validation split (consecutive windows
   of the training context) for each format, and its change against float32 (goals: int8 within
   1%, NF4 within 5%).
"""

import argparse
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxformer
from bench.common import machine_line
from jaxformer.generate import decode, make_settings
from jaxformer.models import DecoderConfig, build_model
from jaxformer.quantization import weight_bytes

FORMATS = ("float32", "int8", "int4", "nf4")


def variant(model, fmt, group):
    return model if fmt == "float32" else jaxformer.quantize(model, fmt, group_size=group)


def decode_speed(args) -> None:
    config = DecoderConfig(max_seq_len=1024)  # GPT-2 small
    model = build_model(config, rngs=nnx.Rngs(0))
    prompt = [list(np.random.default_rng(0).integers(0, config.vocab_size, 16))]
    settings = make_settings(args.new_tokens, temperature=0.0)
    print(f"GPT-2 small shape, batch 1, 16-token prompt, {args.new_tokens} new tokens, greedy:")
    print("| format | weight bytes (MB) | of float32 | decode tokens/s | vs float32 |")
    print("|---|---|---|---|---|")
    base_speed = base_bytes = None
    for fmt in FORMATS:
        m = variant(model, fmt, args.group_size)
        size = weight_bytes(m)["total"]
        decode(m, prompt, settings)  # compile
        speeds = []
        for _ in range(args.repeats):
            timings = {}
            decode(m, prompt, settings, timings=timings)
            speeds.append(args.new_tokens / timings["total_s"])
        speed = float(np.median(speeds))
        base_speed, base_bytes = base_speed or speed, base_bytes or size
        print(f"| {fmt} | {size / 1e6:,.1f} | {size / base_bytes:.3f} | {speed:.1f} "
              f"({', '.join(f'{s:.1f}' for s in speeds)}) | {speed / base_speed:.2f}x |", flush=True)
        del m


def ensure_run(run: Path) -> None:
    if (run / "config.yaml").exists():
        return
    from jaxformer.config import load_config
    from jaxformer.train import train

    print(f"training {run} with the shakespeare_char_cpu preset first", flush=True)
    train(load_config("shakespeare_char_cpu", [f"train.run_dir={run}", "train.progress=false"]))


def perplexity(args) -> None:
    from jaxformer.data import load_corpus
    from jaxformer.data.splits import split_stream
    from jaxformer.train import load_run

    ensure_run(args.run)
    config, model, tokenizer = load_run(args.run, log=lambda *_: None)
    stream = split_stream(config.data, tokenizer, load_corpus(config.data.corpus), "val")
    seq = config.train.seq_len
    count = (len(stream) - 1) // seq
    tokens = stream[:count * seq + 1]
    inputs = jnp.asarray(tokens[:-1].reshape(count, seq))
    targets = jnp.asarray(tokens[1:].reshape(count, seq))

    @jax.jit
    def nll(state, x, y):
        logits = nnx.merge(graphdef, state)(x).logits
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1).sum()

    print(f"\n{args.run} ({config.model.num_layers} layers, d {config.model.d_model}): "
          f"validation perplexity over {count * seq:,} tokens")
    print("| format | kernel bytes | val perplexity | change |")
    print("|---|---|---|---|")
    base = None
    for fmt in FORMATS:
        m = variant(model, fmt, args.group_size)
        graphdef, state = nnx.split(m)
        total = sum(float(nll(state, inputs[i:i + 256], targets[i:i + 256]))
                    for i in range(0, count, 256))
        ppl = math.exp(total / (count * seq))
        base = base or ppl
        sizes = weight_bytes(m)
        kernels = sizes["quantized"] or sum(
            x.nbytes for p, x in _kernels(m))
        print(f"| {fmt} | {kernels:,} | {ppl:.4f} | {100 * (ppl / base - 1):+.2f}% |", flush=True)


def _kernels(model):
    from jaxformer.nn.linear import Linear

    return [(p, m.kernel.get_value()) for p, m in nnx.iter_modules(model)
            if isinstance(m, Linear) and p[-1] != "lm_head"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/shakespeare_char_cpu"))
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()
    print(machine_line())
    if not args.skip_decode:
        decode_speed(args)
    perplexity(args)


if __name__ == "__main__":
    main()
