"""Decoding with lower-precision weights: cast a model's parameters once, compute in that dtype.

Batch-1 decoding reads every weight once per token, so its speed is capped by memory bandwidth /
bytes of weights (bench/bandwidth.py); bfloat16 weights halve the bytes. The model built here
computes in bfloat16 too but keeps float32 where the family does (attention softmax, norms, the
float32 logits; tests/nn/test_bf16_paths.py), and its KV cache follows the compute dtype. The cost in
accuracy is measured on a trained model in tests/train/test_shakespeare_cpu_run.py.

    fast = with_weights_dtype(model, "bfloat16")
    generate(fast, prompts, 128, temperature=0.0)
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.errors import UserError
from jaxformer.models.registry import abstract_model

WEIGHT_DTYPES = ("float32", "bfloat16")


def with_weights_dtype(model: nnx.Module, dtype: str) -> nnx.Module:
    """A copy of `model` whose floating-point parameters are stored in `dtype` (cast once, here)
    and which computes in it (`config.dtype` and `config.param_dtype` set to `dtype`). The
    original model is left as it was. float32 returns `model` itself when it already is float32."""
    if dtype not in WEIGHT_DTYPES:
        raise UserError(f"weights dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    config = model.config
    if not hasattr(config, "param_dtype") or not hasattr(config, "dtype"):
        raise UserError(f"{type(model).__name__} has no dtype settings: its weights cannot be cast")
    if config.dtype == dtype and config.param_dtype == dtype:
        return model
    config = config.replace(dtype=dtype, param_dtype=dtype)
    graphdef, _ = nnx.split(abstract_model(config))
    target = jnp.dtype(dtype)

    def cast(x):
        return x.astype(target) if jnp.issubdtype(x.dtype, jnp.floating) else x

    state = jax.tree.map(cast, nnx.state(model))
    return nnx.merge(graphdef, state)
