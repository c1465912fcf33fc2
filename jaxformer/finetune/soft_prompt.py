"""Soft prompts (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"):
n trained embedding vectors placed before every input; the model itself stays frozen.

`SoftPromptModel(model, n)` wraps a model with the decoder's call convention
`model(tokens, positions, segment_ids, cache)`. The virtual tokens are ids `padded_size + j` of
the wrapped model's token embedding (`PromptEmbed` looks them up in the `SoftPromptParam`
[n, embed]), so they take the first n positions and the real tokens follow at positions n, n+1,
... The outputs cover the real tokens only. With a KV cache, `init_cache` runs the virtual tokens
through the model once and every later call just shifts its positions by n, so decoding costs
what it costs without the prompt. The wrapper's `config.max_seq_len` is the context left for real
tokens.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.nn.embedding import Embed
from jaxformer.finetune.trainable import register_variable_type


@register_variable_type
class SoftPromptParam(nnx.Param):
    """The trained virtual-token embeddings of a soft prompt."""


class PromptEmbed(nnx.Module):
    """A token embedding whose ids past its table (`padded_size + j`) are virtual token j. The
    table keeps its variable (and path, `embed/embedding`); the prompt is `embed/prompt`."""

    def __init__(self, embed: Embed, prompt: jax.Array):
        self.embedding = embed.embedding
        self.vocab_size, self.dtype = embed.vocab_size, embed.dtype
        self.prompt = SoftPromptParam(prompt, out_sharding=(None, "embed"), eager_sharding=False)

    @property
    def table_size(self) -> int:
        return self.embedding.get_value().shape[0]

    def __call__(self, ids: jax.Array) -> jax.Array:
        size, prompt = self.table_size, self.prompt[...]
        real = jnp.take(self.embedding[...], jnp.clip(ids, 0, size - 1), axis=0)
        virtual = jnp.take(prompt, jnp.clip(ids - size, 0, prompt.shape[0] - 1), axis=0)
        return jnp.where((ids >= size)[..., None], virtual.astype(real.dtype), real).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return Embed.attend(self, x)  # the tied head reads the real table only

    def unwrap(self) -> Embed:
        embed = nnx.eval_shape(lambda: Embed(self.vocab_size, self.embedding.get_value().shape[1],
                                             padded_size=self.table_size, dtype=self.dtype,
                                             rngs=nnx.Rngs(0)))
        embed.embedding = self.embedding
        return embed


class SoftPromptModel(nnx.Module):
    """`model` with `num_tokens` trained virtual tokens before every input (see the module
    docstring). `rngs` draws the initial prompt from rows of the vocabulary's embedding table,
    the initialisation Lester et al. found best."""

    def __init__(self, model: nnx.Module, num_tokens: int, *, rngs: nnx.Rngs):
        embed = getattr(model, "embed", None)
        config = getattr(model, "config", None)
        if not isinstance(embed, Embed) or not hasattr(config, "max_seq_len"):
            raise ValueError(f"soft prompts need a model with a token embedding `embed` and the "
                             f"decoder's call (tokens, positions, segment_ids, cache); "
                             f"{type(model).__name__} has not")
        if num_tokens >= config.max_seq_len:
            raise ValueError(f"a soft prompt of {num_tokens} tokens leaves no room in a context "
                             f"of {config.max_seq_len}")
        table = embed.embedding[...]
        rows = jax.random.randint(rngs.params(), (num_tokens,), 0, embed.vocab_size)
        model.embed = PromptEmbed(embed, jnp.take(table, rows, axis=0))
        self.model, self.num_tokens = model, num_tokens
        self.config = config.replace(max_seq_len=config.max_seq_len - num_tokens)

    def _virtual(self, batch: int) -> jax.Array:
        ids = self.model.embed.table_size + jnp.arange(self.num_tokens, dtype=jnp.int32)
        return jnp.broadcast_to(ids, (batch, self.num_tokens))

    def __call__(self, tokens, positions=None, segment_ids=None, cache=None, *, dropout_rng=None):
        """As the wrapped model's call on the real tokens (positions count real tokens from 0)."""
        batch, time = tokens.shape
        n = self.num_tokens
        if positions is None:
            if cache is not None:
                raise ValueError("decoding with a KV cache needs explicit positions")
            positions = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))
        if cache is not None:  # the prompt already sits in the cache's first n slots
            return self.model(tokens, positions + n, segment_ids, cache, dropout_rng=dropout_rng)
        prompt_positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n))
        if segment_ids is not None:  # the prompt joins each row's first document
            segment_ids = jnp.concatenate(
                [jnp.broadcast_to(segment_ids[:, :1], (batch, n)), segment_ids], axis=1)
        out = self.model(jnp.concatenate([self._virtual(batch), tokens], axis=1),
                         jnp.concatenate([prompt_positions, positions + n], axis=1), segment_ids,
                         None, dropout_rng=dropout_rng)
        real = lambda x: None if x is None else x[:, n:]
        return out.replace(logits=real(out.logits), last_hidden_state=real(out.last_hidden_state))

    def init_cache(self, batch: int, max_len: int | None = None):
        """The wrapped model's cache for the prompt plus `max_len` (default: the context left)
        real tokens, with the prompt's keys and values already written."""
        n = self.num_tokens
        cache = self.model.init_cache(batch, (max_len or self.config.max_seq_len) + n)
        positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n))
        out = self.model(self._virtual(batch), positions, jnp.ones_like(positions), cache)
        return out.cache

    def unwrap(self) -> nnx.Module:
        """The wrapped model without the prompt."""
        model = nnx.clone(self.model)
        model.embed = model.embed.unwrap()
        return model
