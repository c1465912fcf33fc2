"""The transformer block: a list of residual sublayers, each with its norm before or after.

    pre-norm (GPT-2, Llama, T5):   x = x + f(norm(x))      for each sublayer f
    post-norm (2017, BERT):        x = norm(x + f(x))

A decoder block's sublayers are self-attention and feed-forward; an encoder-decoder's decoder
block adds cross-attention between them; a mixture-of-experts block swaps the feed-forward. Any
module with an `as_sublayer(x, ctx, cache) -> (y, cache, aux)` method fits (see `Attention` and
`FeedForward`): it gets the `BlockContext` (positions, segment ids, memory, ...), its own cache
entry, and may return named auxiliary losses.
"""

from collections.abc import Mapping

import jax
from flax import nnx

from jaxformer.nn.context import BlockContext
from jaxformer.nn.dropout import dropout


class TransformerBlock(nnx.Module):
    """sublayers: name -> (module, norm), run in order. Each is stored as attribute `name` with
    its norm as `name + "_norm"` (e.g. `attention`, `attention_norm`, `feed_forward`,
    `feed_forward_norm`). `dropout_rate` applies to each sublayer's output before the residual
    sum (Vaswani et al. 2017, 5.4)."""

    def __init__(self, sublayers: Mapping[str, tuple[nnx.Module, nnx.Module]], *,
                 norm_position: str = "pre", dropout_rate: float = 0.0):
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        if not sublayers:
            raise ValueError("a block needs at least one sublayer")
        self.sublayer_names = tuple(sublayers)
        for name, (module, norm) in sublayers.items():
            setattr(self, name, module)
            setattr(self, f"{name}_norm", norm)
        self.norm_position, self.dropout_rate = norm_position, dropout_rate

    def __call__(self, x: jax.Array, ctx: BlockContext, cache: dict | None = None
                 ) -> tuple[jax.Array, dict | None, dict]:
        """x: [batch, time, embed] -> (x, cache, aux). `cache` maps sublayer names to their caches
        (sublayers without one are absent); `aux` sums the sublayers' auxiliary losses by name.
        `ctx.dropout_rng=None` means no dropout."""
        names = self.sublayer_names
        keys = (jax.random.split(ctx.dropout_rng, len(names)) if ctx.dropout_rng is not None
                else [None] * len(names))
        new_cache = None if cache is None else dict(cache)
        aux: dict = {}
        for name, key in zip(names, keys):
            module, norm = getattr(self, name), getattr(self, f"{name}_norm")
            layer_cache = None if cache is None else cache.get(name)
            h = norm(x) if self.norm_position == "pre" else x
            y, layer_cache, layer_aux = module.as_sublayer(h, ctx, layer_cache)
            x = x + dropout(y, self.dropout_rate, key)
            if self.norm_position == "post":
                x = norm(x)
            if new_cache is not None and layer_cache is not None:
                new_cache[name] = layer_cache
            for aux_name, value in layer_aux.items():
                aux[aux_name] = aux.get(aux_name, 0.0) + value
        return x, new_cache, aux
