"""The transformer block: attention and feed-forward sublayers with residuals, pre- or post-norm."""

import jax
from flax import nnx

from jaxformer.nn.dropout import dropout


class TransformerBlock(nnx.Module):
    """pre-norm (GPT-2, Llama):  x + f(norm(x))      for f in (attention, feed-forward)
    post-norm (2017, BERT):      norm(x + f(x))

    The sublayers are built by the caller and handed in, so any attention or feed-forward module
    with the same call signature fits.
    """

    def __init__(self, attention: nnx.Module, feed_forward: nnx.Module, attention_norm: nnx.Module,
                 ffn_norm: nnx.Module, *, norm_position: str = "pre", dropout_rate: float = 0.0):
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        self.attention, self.feed_forward = attention, feed_forward
        self.attention_norm, self.ffn_norm = attention_norm, ffn_norm
        self.norm_position, self.dropout_rate = norm_position, dropout_rate

    def __call__(self, x, positions, segment_ids=None, cache=None, *, dropout_rng=None):
        """x: [batch, time, embed] -> (x, cache). `dropout_rng=None` means no dropout."""
        rngs = jax.random.split(dropout_rng) if dropout_rng is not None else (None, None)
        if self.norm_position == "pre":
            h, cache = self.attention(self.attention_norm(x), positions, segment_ids, cache)
            x = x + dropout(h, self.dropout_rate, rngs[0])
            x = x + dropout(self.feed_forward(self.ffn_norm(x)), self.dropout_rate, rngs[1])
        else:
            h, cache = self.attention(x, positions, segment_ids, cache)
            x = self.attention_norm(x + dropout(h, self.dropout_rate, rngs[0]))
            x = self.ffn_norm(x + dropout(self.feed_forward(x), self.dropout_rate, rngs[1]))
        return x, cache
