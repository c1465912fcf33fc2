"""Turning a list of prompts into the fixed shapes the compiled decoding loop takes.

Prompts are right-padded to a *bucket* length (16, 32, 64, 128, 256, then multiples of 256, capped
at the context), so a new prompt length reuses the program compiled for its bucket instead of
compiling another, while padding never more than doubles a short prompt or adds more than 255
tokens to a long one. Each row
keeps its own length: row i's new tokens go at positions len_i, len_i + 1, ...; the padding slots
carry segment id 0 and are hidden by the attention mask until a new token overwrites them.
"""

import numpy as np

from jaxformer.errors import UserError

MIN_BUCKET = 16
LINEAR_FROM = 256


def bucket_length(length: int, max_len: int) -> int:
    """The padded length for a prompt of `length` tokens: the next power of two from `MIN_BUCKET`
    up to `LINEAR_FROM`, the next multiple of `LINEAR_FROM` above; never more than `max_len`
    (the model's context)."""
    if length > LINEAR_FROM:
        bucket = -(-length // LINEAR_FROM) * LINEAR_FROM
    else:
        bucket = MIN_BUCKET
        while bucket < length:
            bucket *= 2
    return min(bucket, max_len)


def check_request(prompts: list[list[int]], max_new_tokens: int, *, vocab_size: int,
                  max_seq_len: int, cli: bool = False) -> None:
    """UserError naming the prompt and the limit for anything the model cannot serve, in the
    words of `jaxformer generate`'s flags when `cli`, else of the Python API."""
    new = "--max-new-tokens" if cli else "max_new_tokens"
    past = ("pass --past-context to slide over the context" if cli
            else "use generate_past_context to slide over the context")
    if not prompts:
        raise UserError("no prompts given: pass at least one prompt")
    if max_new_tokens < 1:
        raise UserError(f"{new} must be at least 1, got {max_new_tokens}")
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise UserError(f"prompt {i} is empty: give at least one token to continue from")
        if len(prompt) + max_new_tokens > max_seq_len:
            raise UserError(
                f"prompt {i} has {len(prompt)} tokens and {max_new_tokens} new tokens were asked "
                f"for: {len(prompt) + max_new_tokens} > the model's context of {max_seq_len} "
                f"tokens; shorten the prompt or lower {new} to at most "
                f"{max(max_seq_len - len(prompt), 0)} (or {past})")
        bad = [t for t in prompt if not 0 <= int(t) < vocab_size]
        if bad:
            raise UserError(f"prompt {i} has token id {bad[0]} outside the vocabulary "
                            f"[0, {vocab_size}): check the tokenizer matches the model")


def pad_prompts(prompts: list[list[int]], bucket: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to [batch, bucket] int32; returns (tokens, lengths [batch] int32)."""
    tokens = np.full((len(prompts), bucket), pad_id, np.int32)
    lengths = np.zeros((len(prompts),), np.int32)
    for i, prompt in enumerate(prompts):
        tokens[i, :len(prompt)] = prompt
        lengths[i] = len(prompt)
    return tokens, lengths


def cache_length(bucket: int, max_new_tokens: int, max_seq_len: int) -> int:
    """KV-cache slots: room for the padded prompt and every new token, within the context.
    (`check_request` guarantees len_i + max_new_tokens <= max_seq_len for every row.)"""
    return min(bucket + max_new_tokens, max_seq_len)
