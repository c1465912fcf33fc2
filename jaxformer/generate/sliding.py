"""Generating past the model's context, as nanoGPT's sampler does by cropping its input.

A model with learned positions cannot see past `max_seq_len` tokens, and its KV cache cannot slide
(every position would shift). So when a request is longer than the context, generation runs in
chunks: each chunk is one call of the compiled loop, conditioned on the last half-context of
tokens. nanoGPT crops to the last `block_size` tokens at every token and recomputes the whole
forward pass; re-reading half a context once per chunk costs far less and keeps at least half a
context of history for every token. Chunk sizes repeat, so the loop compiles at most twice.
"""

from jaxformer.generate.api import TokenCallback, generate


def generate_past_context(model, prompt: list[int], max_new_tokens: int, *,
                          temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None, seed: int = 0,
                          stop_tokens: list[int] | None = None,
                          on_tokens: TokenCallback | None = None) -> list[int]:
    """Up to `max_new_tokens` tokens after one `prompt`, however long. Stops after a stop token.
    The same seed gives the same tokens. Within the context it equals `generate` exactly."""
    context = model.config.max_seq_len
    keep = max(1, context // 2)
    tokens = list(prompt)[-(context - 1):]
    stops = set(stop_tokens or ())
    new: list[int] = []
    chunk = 0
    while len(new) < max_new_tokens:
        count = min(context - len(tokens), max_new_tokens - len(new))
        out = generate(model, [tokens], count, temperature=temperature, top_k=top_k, top_p=top_p,
                       seed=seed + chunk, stop_tokens=stop_tokens, on_tokens=on_tokens)[0]
        new += out
        if len(out) < count or (out and out[-1] in stops):
            break  # a stop token ended the row
        tokens = (tokens + out)[-keep:]
        chunk += 1
    return new
