"""Does jaxformer decode GPT-2 small 2x as fast as HF transformers' `generate`, at batch 1 and 8,
and how close does batch 1 get to the cap memory bandwidth puts on it?

Prints the figures of docs/performance.md, "Decoding GPT-2 small" (the rows of greedy decoding).

    python -m bench.generate                              # CPU, float32, both libraries
    python -m bench.generate --weights bfloat16           # bf16 weights (half the bytes per token)
    python -m bench.generate --dtype bfloat16 --no-hf     # e.g. on a GPU

GPT-2 small shape, random weights, 16-token prompts, 128 new tokens, greedy, at batch 1 and 8.
Prints tokens/s for both (new tokens over wall time, prefill included; the median of --repeats
runs), their ratio, the time to first token (prefill + one sampled token, compile excluded), and
how close batch-1 decoding gets to the memory-bandwidth cap: bandwidth / bytes of weights read per
token, the bandwidth measured in the same run (a jit-compiled matrix-vector product over 512 MiB,
as bench/bandwidth.py does). `--weights bfloat16` decodes with the float32 model's weights cast
once to bfloat16 (`jaxformer.generate.precision`), against HF in float32.
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxformer
from bench.common import machine_line, time_calls
from jaxformer.generate import decode, make_settings
from jaxformer.generate.precision import with_weights_dtype


def weight_bytes(model) -> int:
    """Bytes of weights read per decoded token: every parameter, except that only one row of the
    position table is read (the token embedding is read whole by the tied LM head)."""
    params = nnx.state(model, nnx.Param)
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    if model.position_embedding is not None:
        table = model.position_embedding.embedding[...]
        total -= table.size * table.dtype.itemsize - table.shape[1] * table.dtype.itemsize
    return total


def measured_bandwidth(mib: int = 512, repeats: int = 10) -> float:
    """Read bandwidth in GB/s: the best of `repeats` jit-compiled float32 matrix-vector products
    over a `mib` MiB matrix (far past the caches), the operation batch-1 decoding repeats."""
    cols = 4096
    rows = mib * 2**20 // (4 * cols)
    matrix = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32)
    vector = jnp.ones((cols,), jnp.float32)
    matvec = jax.jit(jnp.matmul)
    return 4 * rows * cols / time_calls(lambda: matvec(matrix, vector), repeats, warmup=1).best / 1e9


def bench_jaxformer(model, prompts, new_tokens: int, repeats: int) -> dict:
    full = make_settings(new_tokens, temperature=0.0)
    first = make_settings(1, temperature=0.0)
    timings = {}
    decode(model, prompts, full, timings=timings)  # compile
    compile_s = timings["compile_s"]
    decode(model, prompts, first)  # compile the one-token program
    total = time_calls(lambda: decode(model, prompts, full), repeats).median
    ttft = time_calls(lambda: decode(model, prompts, first), repeats).median
    return {"tokens_per_s": len(prompts) * new_tokens / total, "ttft_s": ttft,
            "decode_tokens_per_s": len(prompts) * (new_tokens - 1) / max(total - ttft, 1e-9),
            "compile_s": compile_s}


def bench_hf(prompts, new_tokens: int, repeats: int) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    ids = torch.tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)

    def run(n):
        with torch.inference_mode():
            # min_new_tokens keeps a random model from stopping early at its EOS token.
            return model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, use_cache=True, pad_token_id=50256)

    out = run(new_tokens)  # warm-up
    assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
    total = time_calls(lambda: run(new_tokens), repeats).median
    ttft = time_calls(lambda: run(1), repeats).median
    return {"tokens_per_s": len(prompts) * new_tokens / total, "ttft_s": ttft,
            "decode_tokens_per_s": len(prompts) * (new_tokens - 1) / max(total - ttft, 1e-9)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2-small")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--weights", default=None, choices=["float32", "bfloat16"],
                        help="cast the model's weights once to this dtype before decoding")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many timed runs")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="memory read bandwidth for the cap (default: measured in this run)")
    parser.add_argument("--no-hf", action="store_true", help="skip the HuggingFace comparison")
    args = parser.parse_args()

    config = jaxformer.load_model_config(args.model, dtype=args.dtype, param_dtype=args.dtype)
    model = jaxformer.DecoderLM(config, rngs=nnx.Rngs(0))
    if args.weights:
        model = with_weights_dtype(model, args.weights)
    nbytes = weight_bytes(model)
    print(machine_line(), flush=True)
    bandwidth = args.bandwidth_gbs or measured_bandwidth()
    cap = bandwidth * 1e9 / nbytes
    print(f"model: {args.model}, weights {args.weights or args.dtype}, {nbytes / 1e9:.3f} GB read "
          f"per token; bandwidth {bandwidth:.1f} GB/s "
          f"({'given' if args.bandwidth_gbs else 'measured now'}): batch-1 cap {cap:.1f} tokens/s")
    print(f"{args.prompt_len}-token prompts, {args.new_tokens} new tokens, greedy, median of "
          f"{args.repeats}")

    rng = np.random.default_rng(0)
    for batch in args.batch:
        prompts = rng.integers(0, config.vocab_size, (batch, args.prompt_len)).tolist()
        ours = bench_jaxformer(model, prompts, args.new_tokens, args.repeats)
        line = (f"batch {batch}: jaxformer {ours['tokens_per_s']:.1f} tokens/s "
                f"(decode {ours['decode_tokens_per_s']:.1f}), TTFT {ours['ttft_s'] * 1e3:.1f} ms, "
                f"compile {ours['compile_s']:.1f} s")
        if batch == 1:
            line += f"; {ours['decode_tokens_per_s'] / cap:.0%} of the bandwidth cap"
        print(line, flush=True)
        if not args.no_hf and args.dtype == "float32":
            hf = bench_hf(prompts, args.new_tokens, args.repeats)
            print(f"batch {batch}: HF transformers {hf['tokens_per_s']:.1f} tokens/s "
                  f"(decode {hf['decode_tokens_per_s']:.1f}), TTFT {hf['ttft_s'] * 1e3:.1f} ms; "
                  f"ratio jaxformer/HF {ours['tokens_per_s'] / hf['tokens_per_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
