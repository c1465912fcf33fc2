"""AdamW with warmup + cosine decay, global-norm clipping, decay on matrices only, accumulation.

    clip_by_global_norm(grad_clip) -> adamw(schedule, b1, b2, eps, weight_decay, mask=ndim >= 2)
    wrapped in optax.MultiSteps when grad_accum_steps > 1 (the update is applied every k-th call,
    with the mean of the k gradients; the calls in between return zero updates).
"""

import jax
import optax
from flax import nnx

from jaxformer.config import OptimizerConfig


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
    """Learning rate at optimizer step t: linear from 0 to `lr` over `warmup_steps`, then a half
    cosine down to `min_lr` at `decay_steps`, then `min_lr` (nanoGPT's `get_lr`)."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr, warmup_steps=config.warmup_steps,
        decay_steps=config.decay_steps, end_value=config.min_lr)


def decay_mask(params):
    """True for parameters that get weight decay: those with >= 2 axes (weights, embeddings), as
    in nanoGPT and GPT-3; norm scales and biases are left alone. The stacked "layers" axis of a
    scanned model (models/layers.py) does not count: a stack of norm scales is still not a matrix."""
    def mask(p):
        if not isinstance(p, nnx.Variable):
            return p.ndim >= 2
        names = p.get_metadata().get("out_sharding") or ()
        own_axes = len(p.get_value().shape) - (1 if names[:1] == ("layers",) else 0)
        return jax.tree.map(lambda _: own_axes >= 2, p)  # a Variable holding the flag

    return jax.tree.map(mask, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
                        weight_decay=config.weight_decay, mask=decay_mask)
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw) if config.grad_clip else adamw
    if config.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
    return tx
