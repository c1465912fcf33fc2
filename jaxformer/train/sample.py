"""A text sample from a trained model, longer than its context if asked."""

from jaxformer.generate import generate


def sample_tokens(model, prompt: list[int], num_tokens: int, *, temperature: float = 0.8,
                  top_k: int | None = None, seed: int = 0) -> list[int]:
    """`num_tokens` new tokens after `prompt`. When prompt + new tokens exceed the model's context
    (nanoGPT's CPU preset samples 500 characters from a 64-token context), it generates in chunks,
    each conditioned on the last half-context of tokens: nanoGPT crops its context the same way,
    only token by token. Chunk sizes repeat, so the decode loop compiles at most twice."""
    context = model.config.max_seq_len
    keep = max(1, context // 2)
    tokens = list(prompt)[-(context - 1):]
    new: list[int] = []
    chunk = 0
    while len(new) < num_tokens:
        room = context - len(tokens)
        count = min(room, num_tokens - len(new))
        out = generate(model, [tokens], count, temperature=temperature, top_k=top_k,
                       seed=seed + chunk)[0]
        new += out
        tokens = (tokens + out)[-keep:]
        chunk += 1
    return new
