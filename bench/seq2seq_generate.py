"""Does jaxformer decode a t5-small-shaped encoder-decoder 2x as fast as HF transformers'
`generate`, greedy and with 4 beams, at batch 1 and 8, with identical tokens?

Prints the figures of docs/performance.md, "Decoding an encoder-decoder".

    python -m bench.seq2seq_generate [--repeats 3] [--new-tokens 64] [--batches 1,8]

A t5-small-shaped model (d 512, 6 + 6 layers, 8 heads, vocab 32,128) with random weights, made in
transformers and imported into jaxformer, so both run the same weights. 16-token inputs, 64 new
tokens (no end token, so every row runs to the end), greedy and 4-beam search, at batch 1 and 8.
Prints tokens/s for both (new tokens of the best hypotheses over wall time, encoding included,
compilation excluded; best of --repeats after one untimed call each), their ratio, and whether
the tokens are identical.
"""

import argparse
import os
import tempfile

import numpy as np

from bench.common import machine_line, time_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=16)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()

    import torch
    import transformers

    from jaxformer.generate import beam_search, generate
    from jaxformer.interop import hf

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    hf_model = transformers.T5ForConditionalGeneration(
        transformers.T5Config(decoder_start_token_id=0)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        _, model = hf.load(tmp)
    n = args.new_tokens
    print(machine_line())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"t5-small shape, random weights, {args.input_len}-token inputs, {n} new tokens, "
          f"best of {args.repeats}")
    print(f"{'decoding':<10} {'batch':>5} {'HF tok/s':>10} {'jaxformer':>10} {'ratio':>7}  identical")
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        sources = rng.integers(2, 32000, (batch, args.input_len)).tolist()
        ids = torch.tensor(sources)
        for beams in (1, 4):
            def run_hf():
                with torch.inference_mode():
                    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids),
                                            max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                            num_beams=beams, eos_token_id=None, pad_token_id=0,
                                            decoder_start_token_id=0)
                return out[:, 1:].tolist()

            def run_ours():
                if beams == 1:
                    return generate(model, sources, n, temperature=0.0)
                return beam_search(model, sources, n, num_beams=beams)

            # Each side's untimed call: HF's warm-up, jaxformer's compilation.
            theirs, ours = (time_calls(run, args.repeats, warmup=1) for run in (run_hf, run_ours))
            hf_rate, our_rate = batch * n / theirs.best, batch * n / ours.best
            name = "greedy" if beams == 1 else f"{beams}-beam"
            print(f"{name:<10} {batch:>5} {hf_rate:>10.1f} {our_rate:>10.1f} "
                  f"{our_rate / hf_rate:>6.2f}x  {ours.result == theirs.result}", flush=True)


if __name__ == "__main__":
    main()
