"""What sits on an encoder's output: the pooler and BERT's heads, as HF's BERT classes build them.

    pooler                tanh(W h[CLS] + b)                                  (BertPooler)
    MaskedLMHead          LayerNorm(act(W h + b)) @ word_embeddingsᵀ + bias (BertLMPredictionHead)
    Dense(d, 2)           next-sentence logits on the pooled output          (BertOnlyNSPHead)
    Dense(d, labels)      sequence (pooled) or token classification          (classifier)
    Dense(d, 2)           span QA: start and end logits per token            (qa_outputs)

Every head returns float32 logits (float32 accumulation from bf16 activations).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.embedding import Embed, padded
from jaxformer.nn.feedforward import ACTIVATIONS
from jaxformer.nn.linear import Linear
from jaxformer.nn.norms import LayerNorm
from jaxformer.nn.params import normal, param, zeros


def dense(d_in: int, d_out: int, *, init_std: float, dtype, param_dtype, rngs: nnx.Rngs,
          out_dtype=None) -> Linear:
    """A [d_in, d_out] dense layer with a bias whose output axis is left unsharded (small heads,
    and [embed, embed] kernels that cannot name "embed" twice)."""
    return Linear(d_in, d_out, in_axes=("embed",), out_axes=(None,), init=normal(init_std),
                  dtype=dtype, param_dtype=param_dtype, out_dtype=out_dtype, rngs=rngs)


class Pooler(nnx.Module):
    """BERT's pooled output: a dense layer and tanh on the first token ([CLS]) of each row."""

    def __init__(self, d_model: int, *, init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.dense = dense(d_model, d_model, init_std=init_std, dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [batch, time, embed] -> [batch, embed]
        return jnp.tanh(self.dense(x[:, 0]))


class MaskedLMHead(nnx.Module):
    """dense + activation + LayerNorm, then the decoder tied to the word embeddings plus a bias
    of its own (padded with the word table, zeros past `vocab_size`)."""

    def __init__(self, d_model: int, vocab_size: int, padded_vocab_size: int, *, activation: str,
                 norm_eps: float, init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.activation = activation
        self.transform = dense(d_model, d_model, init_std=init_std, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
        self.norm = LayerNorm(d_model, eps=norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.bias = param(rngs.params(), padded(zeros, vocab_size, 0), (padded_vocab_size,),
                          ("vocab",), param_dtype)

    def __call__(self, x: jax.Array, word_embeddings: Embed) -> jax.Array:
        """x [batch, time, embed] -> float32 logits [batch, time, vocab]."""
        h = self.norm(ACTIVATIONS[self.activation](self.transform(x)))
        logits = word_embeddings.attend(h)
        return logits + self.bias[...][:word_embeddings.vocab_size].astype(jnp.float32)


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x [batch, time, embed], positions [batch, n] (indices into time) -> [batch, n, embed]."""
    return jnp.take_along_axis(x, positions[..., None].astype(jnp.int32), axis=1)
