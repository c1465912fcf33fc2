"""Is jaxformer's BERT-base masked-LM step (forward and backward) 1.3x faster than HF
transformers' in PyTorch?

Prints the figures of docs/performance.md, "BERT-base: masked-LM step".

    python -m bench.encoder [--rounds 5] [--warmup 2]

Both sides: BERT-base shape (12 layers, d 768, vocabulary 30522), float32, random weights,
batch 8 x 128 tokens, 20 masked positions per row (Google's BERT recipe for 128 tokens), dropout
off on both (HF also drops attention probabilities, which jaxformer does not implement). One
step = the loss's gradient with respect to every parameter, no optimizer update.

- HF: `BertForMaskedLM` with labels (-100 off the masked positions), `loss.backward()`; as
  transformers computes it, the vocabulary projection runs at all 128 positions.
- jaxformer "gathered": `Encoder(head="masked_lm")` with `masked_positions`, so the head runs at
  the 20 masked positions only, as Google's BERT pretraining code does.
- jaxformer "all positions": the head at every position, the same work as HF.

The rounds alternate the three so the machine's drift affects each alike, each timed step after
an untimed one of its own; the median step time of each is reported with tokens/s, the ratio to
HF, and MFU against the float32 matmul peak measured here, the fastest matmul on BERT's product
shapes and a 2048-cube by XLA or PyTorch (FLOPs: 2 x multiply-adds forward, twice that backward,
of the matmuls each variant actually runs), then the ceiling that peak puts on the gathered
variant (bench/common.py). Run it on a quiet machine.
"""

import argparse
import os
import statistics

from bench.common import ceiling_line, machine_line, matmul_peak, same_allocator, time_calls

BATCH, SEQ, PREDICTIONS = 8, 128, 20


def inputs(vocab: int):
    import numpy as np

    rng = np.random.default_rng(0)
    tokens = rng.integers(5, vocab, size=(BATCH, SEQ)).astype(np.int32)
    token_types = np.zeros_like(tokens)
    token_types[:, SEQ // 2:] = 1
    positions = np.sort(np.stack([rng.choice(np.arange(1, SEQ - 1), PREDICTIONS, replace=False)
                                  for _ in range(BATCH)]), axis=1).astype(np.int32)
    targets = rng.integers(5, vocab, size=(BATCH, PREDICTIONS)).astype(np.int32)
    return tokens, token_types, positions, targets


def step_flops(d=768, layers=12, ffn=3072, vocab=30522, head_positions=SEQ) -> float:
    """Training FLOPs of one step: 6 x multiply-adds of every matmul (2 forward, 4 backward),
    the attention's two T x T products included; the vocabulary projection and the head's
    transform at `head_positions` per row."""
    tokens = BATCH * SEQ
    per_token_layer = 4 * d * d + 2 * d * ffn + 2 * SEQ * d  # q,k,v,o; ffn; scores + values
    head = BATCH * head_positions * (d * d + d * vocab)
    return 6.0 * (tokens * layers * per_token_layer + head)


def hf_step():
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForMaskedLM(config).train()
    tokens, token_types, positions, targets = inputs(config.vocab_size)
    labels = torch.full((BATCH, SEQ), -100, dtype=torch.long)
    for row in range(BATCH):
        labels[row, torch.tensor(positions[row], dtype=torch.long)] = torch.tensor(
            targets[row], dtype=torch.long)
    args = dict(input_ids=torch.tensor(tokens, dtype=torch.long),
                token_type_ids=torch.tensor(token_types, dtype=torch.long),
                attention_mask=torch.ones(BATCH, SEQ, dtype=torch.long), labels=labels)

    def step():
        model.zero_grad(set_to_none=True)
        model(**args).loss.backward()

    return step


def jax_step(gather: bool):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxformer.models import build_model
    from jaxformer.models.encoder import EncoderConfig
    from jaxformer.tasks.losses import token_cross_entropy

    config = EncoderConfig(head="masked_lm", dropout=0.0)
    graphdef, params = nnx.split(build_model(config, rngs=nnx.Rngs(0)))
    tokens, token_types, positions, targets = (jnp.asarray(a) for a in inputs(config.vocab_size))
    segment_ids = jnp.ones_like(tokens)

    def loss(params):
        model = nnx.merge(graphdef, params)
        if gather:
            logits = model(tokens, token_types, segment_ids, masked_positions=positions).logits
        else:
            full = model(tokens, token_types, segment_ids).logits
            logits = jnp.take_along_axis(full, positions[..., None], axis=1)
        return token_cross_entropy(logits, targets).mean()

    grad = jax.jit(jax.grad(loss))

    def step():
        jax.block_until_ready(grad(params))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    allocator = same_allocator()  # restarts once: glibc reads the settings at start-up

    import torch

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    print(f"{machine_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(allocator)
    # One measured peak serves the MFU column and the ceiling: the fastest float32 matmul on
    # BERT's own product shapes and a 2048-cube, XLA or PyTorch.
    peak, where = matmul_peak([(BATCH * SEQ, 768, 768), (BATCH * SEQ, 768, 3072),
                               (BATCH * SEQ, 3072, 768), (BATCH * PREDICTIONS, 768, 30522),
                               (2048, 2048, 2048)])
    print(f"float32 matmul peak (best measured, median of 5): {peak / 1e9:.0f} GFLOP/s ({where}); "
          f"MFU below is against it")
    steps = {"HF BertForMaskedLM (PyTorch)": hf_step(),
             "jaxformer, head at masked positions": jax_step(gather=True),
             "jaxformer, head at all positions": jax_step(gather=False)}
    flops = {"HF BertForMaskedLM (PyTorch)": step_flops(),
             "jaxformer, head at masked positions": step_flops(head_positions=PREDICTIONS),
             "jaxformer, head at all positions": step_flops()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            # One untimed step of the same side first: a training run repeats one library's
            # step, and the other library's step just before leaves the caches and the
            # allocator's free memory in its own state (it cost jaxformer's next step 1-2 s).
            times[name].append(time_calls(step, warmup=1).median)
    hf_name = next(iter(steps))
    hf_median = statistics.median(times[hf_name])
    print(f"\nMLM forward + backward, BERT-base, batch {BATCH} x {SEQ} tokens, float32, "
          f"{args.rounds} rounds (median):")
    for name, values in times.items():
        median = statistics.median(values)
        tokens_per_s = BATCH * SEQ / median
        mfu = flops[name] / median / peak
        print(f"  {name:38s} {median:6.2f} s/step  {tokens_per_s:7.0f} tokens/s  "
              f"x{hf_median / median:4.2f} HF  MFU {mfu:5.1%}  "
              f"(min {min(values):.2f}, max {max(values):.2f})")
    print(ceiling_line(flops["jaxformer, head at masked positions"], hf_median, peak, where,
                       goal=1.3, work="jaxformer's step (head at the masked positions)"))


if __name__ == "__main__":
    main()
