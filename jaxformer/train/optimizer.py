"""AdamW with warmup + cosine decay, global-norm clipping, and weight decay chosen by path.

    clip_by_global_norm(grad_clip) -> adamw(schedule, b1, b2, eps, weight_decay, mask=by path)

Gradient accumulation is not an optimizer wrapper here: the train step sums the gradients of
k micro-batches itself and divides by their total token count (see `jaxformer.train.step`).
"""

import fnmatch

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxformer.config import OptimizerConfig
from jaxformer.nn.params import path_string
from jaxformer.train.loss_scale import with_loss_scale


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
    """Learning rate at optimizer step t: linear from 0 to `lr` over `warmup_steps`, then a half
    cosine down to `min_lr` at `decay_steps`, then `min_lr` (nanoGPT's `get_lr`). Or, with
    `schedule: rsqrt`, `lr * min(s / warmup, sqrt(warmup / s))` at step s = t + 1 (Vaswani et al.
    2017, 5.3, with `lr` their peak d_model^-0.5 * warmup^-0.5)."""
    if config.schedule == "rsqrt":
        lr, warmup = config.lr, float(config.warmup_steps)

        def rsqrt(count):
            step = jnp.asarray(count, jnp.float32) + 1.0
            return lr * jnp.minimum(step / warmup, jnp.sqrt(warmup / step))

        return rsqrt
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr, warmup_steps=config.warmup_steps,
        decay_steps=config.decay_steps, end_value=config.min_lr)


def decay_mask(patterns):
    """params -> a tree of booleans like it: True where the parameter's path matches one of the
    glob `patterns` (`optimizer.weight_decay_params`). Deciding by name rather than by the number
    of axes keeps biases of shape [heads, head_dim] undecayed, and the stacked "layers" axis of a
    scanned model changes nothing."""
    def mask(params):
        def one(path, p):
            decayed = any(fnmatch.fnmatchcase(path_string(path), pattern) for pattern in patterns)
            return jax.tree.map(lambda _: decayed, p) if isinstance(p, nnx.Variable) else decayed

        return jax.tree_util.tree_map_with_path(one, params,
                                                is_leaf=lambda x: isinstance(x, nnx.Variable))

    return mask


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
                        weight_decay=config.weight_decay,
                        mask=decay_mask(tuple(config.weight_decay_params)))
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw) if config.grad_clip else adamw
    if config.loss_scale == "dynamic":  # float16 training: see jaxformer/train/loss_scale.py

        tx = with_loss_scale(tx)
    return tx
