"""Sampling rules: pure functions of (logits [batch, vocab], rng) -> token ids [batch].

`rng` is one key for the batch, or one key per row ([batch] typed keys): then each row is drawn
on its own, so its token depends only on its own logits and key.

Applied in the order HuggingFace uses: temperature, then top-k, then top-p (nucleus) on what
top-k left, then one categorical draw. Temperature 0 is greedy (argmax, no randomness).

`top_k` is static (a Python int: it sets the shape of `jax.lax.top_k`'s output); `temperature` and
`top_p` may be Python floats (a zero temperature or `top_p >= 1` then drops that stage from the
trace) or traced scalars.
"""

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


def greedy(logits: jax.Array) -> jax.Array:
    """The most likely token of each row: [batch, vocab] -> [batch] int32."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keep each row's k largest logits, set the rest to -inf. Ties with the k-th value are kept,
    so a row may keep more than k tokens only when logits are exactly equal."""
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [batch, 1]
    return jnp.where(logits >= kth, logits, _NEG_INF)


def _nucleus_cutoff(sorted_logits: jax.Array, p) -> jax.Array:
    """The smallest logit inside the nucleus, [batch, 1], from logits sorted in descending order.
    A token is kept when the probability of the tokens strictly more likely than it is below p
    (HF's rule, written in descending order), so the most likely token is always kept."""
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep = (mass_before < p).at[..., 0].set(True)
    return jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches p;
    the rest become -inf."""
    sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)  # descending
    # Comparing against the cut-off logit avoids scattering a mask back to vocabulary order.
    return jnp.where(logits >= _nucleus_cutoff(sorted_logits, p), logits, _NEG_INF)


def top_k_top_p_filter(logits: jax.Array, k: int, p) -> jax.Array:
    """top-k, then top-p over what top-k kept (renormalised), as HF chains them. The nucleus is
    found among the k values `jax.lax.top_k` already sorted, not by sorting the vocabulary."""
    if k >= logits.shape[-1]:
        return top_p_filter(logits, p)
    top_values = jax.lax.top_k(logits, k)[0]  # [batch, k], descending
    cutoff = jnp.maximum(_nucleus_cutoff(top_values, p), top_values[..., -1:])
    return jnp.where(logits >= cutoff, logits, _NEG_INF)


def is_greedy(temperature) -> bool:
    """True when `temperature` is a static zero (greedy decoding is then traced on its own)."""
    return not isinstance(temperature, jax.Array) and float(temperature) == 0.0


def filter_logits(logits: jax.Array, *, temperature=1.0, top_k: int | None = None,
                  top_p=None) -> jax.Array:
    """The logits a sampler draws from, float32 [batch, vocab], excluded tokens at -inf.
    `temperature` must be positive here (greedy is handled by `sample`)."""
    logits = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    use_top_p = top_p is not None and (isinstance(top_p, jax.Array) or float(top_p) < 1.0)
    if top_k is not None and use_top_p:
        return top_k_top_p_filter(logits, top_k, top_p)
    if top_k is not None:
        return top_k_filter(logits, top_k)
    if use_top_p:
        return top_p_filter(logits, top_p)
    return logits


def _is_key_per_row(rng) -> bool:
    """[batch] typed keys (or raw uint32 [batch, 2] keys), as opposed to one key."""
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return rng.ndim == 1
    return rng.ndim == 2


def sample(logits: jax.Array, rng: jax.Array, *, temperature=1.0, top_k: int | None = None,
           top_p=None) -> jax.Array:
    """One token per row: [batch, vocab] float logits -> [batch] int32. `rng`: one key, or
    [batch] keys (row i drawn with key i, on its own).

    A traced temperature of 0 also gives the argmax (selected with `where`, so it costs a draw).
    """
    logits = logits.astype(jnp.float32)
    if is_greedy(temperature):
        return greedy(logits)
    safe_temperature = jnp.where(jnp.asarray(temperature) > 0, temperature, 1.0)
    filtered = filter_logits(logits, temperature=safe_temperature, top_k=top_k, top_p=top_p)
    if _is_key_per_row(rng):
        drawn = jax.vmap(jax.random.categorical)(rng, filtered).astype(jnp.int32)
    else:
        drawn = jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)
    if isinstance(temperature, jax.Array):
        return jnp.where(temperature > 0, drawn, greedy(logits))
    return drawn
