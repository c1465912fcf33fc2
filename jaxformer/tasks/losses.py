"""Losses tasks share: masked token-level cross-entropy, computed in float32."""

import jax
import jax.numpy as jnp


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target]: logits [..., vocab], targets [...] int -> [...] float32.

    Computed as logsumexp(logits) - logits[target]: the full [..., vocab] log-softmax is never
    materialised (for GPT-2 that is 50,257 floats per token, written and read back in the
    forward pass and again in the backward one); the gradient is softmax - one_hot(target)."""
    logits = logits.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - target_logit[..., 0]


def masked_loss_sum(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array):
    """(sum of the per-token losses where loss_mask is 1, number of those tokens), float32.
    Sums rather than a mean, so evaluation can add batches up exactly."""
    mask = loss_mask.astype(jnp.float32)
    return jnp.sum(token_cross_entropy(logits, targets) * mask), jnp.sum(mask)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Mean cross-entropy in nats over the tokens where loss_mask is 1 (padding and prompt
    tokens count for nothing). logits [batch, time, vocab]; targets, loss_mask [batch, time]."""
    total, count = masked_loss_sum(logits, targets, loss_mask)
    return total / jnp.maximum(count, 1.0)
