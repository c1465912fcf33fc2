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


# Weight decay goes to weight matrices and embedding tables, as nanoGPT and GPT-3 decay every
# matrix; biases (also attention's [heads, head_dim] ones) and norm scales are left alone. Deciding
# by the parameter's name rather than its number of axes keeps that true for 2-D biases and for the
# stacked "layers" axis of a scanned model.
DECAYED = ("kernel", "embedding")


def decay_mask(params):
    """A tree of booleans like `params`: True where the parameter gets weight decay."""
    def mask(path, p):
        decayed = getattr(path[-1], "key", None) in DECAYED
        return jax.tree.map(lambda _: decayed, p) if isinstance(p, nnx.Variable) else decayed

    return jax.tree_util.tree_map_with_path(mask, params,
                                            is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
                        weight_decay=config.weight_decay, mask=decay_mask)
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw) if config.grad_clip else adamw
    if config.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
    return tx
