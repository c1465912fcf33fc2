"""How long do one decoding step's matrix products take with nothing else around them, in XLA and
in PyTorch?

Prints the figures of docs/performance.md, "Decoding GPT-2 small" (the rows of one decoding
step's matrix products); "Decoding an encoder-decoder" reads them to explain its batch-8 rows.

    python -m bench.decode_products [--rows 1 8 32] [--repeats 15]

A decoding step multiplies a few rows (the batch, times the beams) by every weight matrix of the
decoder: per layer the attention projections and the feed-forward, then the LM head. At so few
rows the matmul kernels run far below the machine's peak, and they set the pace of decoding at
batch 8 and beyond. This script times those products alone, for GPT-2 small and for a t5-small
decoder step (self-attention q, k, v, o; cross-attention q, o, since the encoder's keys and values
are computed once; the feed-forward; the head), all in one compiled XLA call and back to back in
PyTorch, median of --repeats after one warm-up. Compare with bench/generate.py and
bench/seq2seq_generate.py, whose steps do these products and more (norms, attention over the
cache, choosing the next token).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import machine_line, time_calls


def gpt2_step(d=768, mlp=3072, layers=12, vocab=50257) -> list[tuple[int, int]]:
    """(in, out) of every weight matrix a GPT-2 small decoding step multiplies by."""
    return [(d, d)] * 4 * layers + [(d, mlp), (mlp, d)] * layers + [(d, vocab)]


def t5_decoder_step(d=512, inner=512, ff=2048, layers=6, vocab=32128) -> list[tuple[int, int]]:
    """The same for a t5-small (v1.0) decoder step."""
    attention = [(d, inner)] * 3 + [(inner, d)] + [(d, inner), (inner, d)]
    return (attention + [(d, ff), (ff, d)]) * layers + [(d, vocab)]


def products_seconds(shapes: list[tuple[int, int]], rows: int, repeats: int) -> dict[str, float]:
    """Median seconds of [rows, k] x [k, n] for every (k, n) of `shapes`, per library."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    inputs = {k: rng.normal(size=(rows, k)).astype(np.float32) for k, _ in shapes}
    jw, jx = [jnp.asarray(w) for w in weights], {k: jnp.asarray(x) for k, x in inputs.items()}
    tw = [torch.from_numpy(w) for w in weights]
    tx = {k: torch.from_numpy(x) for k, x in inputs.items()}
    products = jax.jit(lambda ws, xs: [xs[w.shape[0]] @ w for w in ws])

    def torch_products():
        with torch.inference_mode():
            return [tx[w.shape[0]] @ w for w in tw]

    # The warm-up compiles the XLA side; PyTorch gets the same untimed call.
    return {"XLA": time_calls(lambda: products(jw, jx), repeats, warmup=1).median,
            "PyTorch": time_calls(torch_products, repeats, warmup=1).median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    for name, shapes in (("GPT-2 small", gpt2_step()), ("t5-small decoder", t5_decoder_step())):
        weights_mb = sum(k * n for k, n in shapes) * 4 / 1e6
        for rows in args.rows:
            seconds = products_seconds(shapes, rows, args.repeats)
            figures = ", ".join(f"{library} {s * 1e3:.1f} ms" for library, s in seconds.items())
            print(f"{name}, {rows} rows ({len(shapes)} products, {weights_mb:.0f} MB of weights): "
                  f"{figures} a step", flush=True)


if __name__ == "__main__":
    main()
