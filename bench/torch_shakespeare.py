"""How long does the recipe of `jaxformer train shakespeare_char_cpu` take as one PyTorch command
(HF transformers' GPT-2 code, torch.optim.AdamW), and what validation loss does it reach?

The reference side of docs/performance.md, "The Shakespeare recipe": bench/shakespeare_vs_torch.py
runs it as a command of its own, so that its imports and start-up count as jaxformer's do. It
imports nothing from jaxformer or JAX.

    python -m bench.torch_shakespeare [--steps 2000] [--out DIR]

Same as the preset: Tiny Shakespeare by characters (the packaged copy; vocabulary = the sorted
characters, first 90% trains), random windows of 64 + 1 characters, batch 12, 4 layers, 4 heads,
d 128, exact-erf GELU, layer norm eps 1e-5, tied embeddings, no dropout, AdamW (betas 0.9/0.99,
eps 1e-8, weight decay 0.1 on the matrices only), linear warmup over 100 steps to 1e-3 and a
cosine to 1e-4 at step 2000, gradient clipping at 1.0; the train loss read back every 50 steps,
20 validation batches evaluated at step 0, every 250 steps and at the end, model + optimizer saved
every 500 steps and at the end (safetensors, as jaxformer writes its own format), then a
200-character sample (temperature 0.8, top-k 200, the context cropped to 64 as nanoGPT does).
One difference the HF code fixes: GPT-2's linear layers and norms have biases (nanoGPT's preset
has none), about 4% more parameters.
"""

import argparse
import gzip
import math
import os
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
CORPUS = Path(__file__).resolve().parent.parent / "jaxformer" / "data" / "tinyshakespeare.txt.gz"


def lr_at(step: int, *, lr=1e-3, min_lr=1e-4, warmup=100, decay=2000) -> float:
    """optax.warmup_cosine_decay_schedule as the preset sets it (from 0 over `warmup` steps)."""
    if step < warmup:
        return lr * step / warmup
    if step >= decay:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (step - warmup) / (decay - warmup)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default=None, help="checkpoint directory (default: a temporary one)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(1337)
    text = gzip.decompress(CORPUS.read_bytes()).decode("utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(len(data) * 0.9)
    train_data, val_data = data[:cut], data[cut:]
    batch, block = 12, 64

    def get_batch(split, generator):
        source = train_data if split == "train" else val_data
        starts = torch.randint(len(source) - block, (batch,), generator=generator)
        rows = torch.stack([source[s:s + block + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    config = GPT2Config(vocab_size=len(chars), n_positions=block, n_embd=128, n_layer=4, n_head=4,
                        activation_function="gelu", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=0.0, betas=(0.9, 0.99), eps=1e-8)
    val_generator = torch.Generator().manual_seed(0)
    val_batches = [get_batch("val", val_generator) for _ in range(20)]
    train_generator = torch.Generator().manual_seed(1337)
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="torch-shakespeare-"))

    def loss_of(x, y):
        logits = model(x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def evaluate(step):
        model.eval()
        with torch.no_grad():
            loss = sum(loss_of(x, y).item() for x, y in val_batches) / len(val_batches)
        model.train()
        print(f"step {step}: val loss {loss:.4f}", flush=True)
        return loss

    def save(step):
        tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()
                   if k != "lm_head.weight"}  # tied: stored once
        for i, state in enumerate(optimizer.state.values()):
            tensors |= {f"opt.{i}.{k}": v.contiguous() for k, v in state.items()
                        if torch.is_tensor(v) and v.dim() > 0}
        save_file(tensors, out_dir / f"step_{step}.safetensors")

    val_loss = evaluate(0)
    losses = []
    train_start = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, decay=args.steps)
        x, y = get_batch("train", train_generator)
        loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        done = step + 1
        if done % 50 == 0 or done == args.steps:
            mean = torch.stack(losses).mean().item()
            losses.clear()
            print(f"step {done}: loss {mean:.4f}", flush=True)
        if done % 250 == 0 or done == args.steps:
            val_loss = evaluate(done)
        if done % 500 == 0 or done == args.steps:
            save(done)
    train_s = time.perf_counter() - train_start

    model.eval()
    generator = torch.Generator().manual_seed(1337)
    ids = torch.tensor([[index["\n"]]])
    with torch.no_grad():
        for _ in range(200):
            logits = model(ids[:, -block:]).logits[:, -1] / 0.8
            top = torch.topk(logits, min(200, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < top, -float("inf"))
            ids = torch.cat([ids, torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)], 1)
    print("--- sample ---\n" + "".join(chars[i] for i in ids[0].tolist()) + "\n---")
    print(f"torch: val loss {val_loss:.4f}, train loop {train_s:.1f} s, "
          f"command {time.perf_counter() - STARTED:.1f} s", flush=True)
    sys.exit(0 if math.isfinite(val_loss) else 1)


if __name__ == "__main__":
    main()
