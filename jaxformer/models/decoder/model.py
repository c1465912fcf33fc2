"""The decoder-only language model: GPT-2 and Llama (and their relatives) from one config.

    tokens -> token embedding (+ learned or sinusoidal positions) -> N x TransformerBlock
           -> final norm (pre-norm models) -> LM head (tied embedding or its own matrix) -> logits

One call signature serves training and decoding: `model(tokens, positions, segment_ids, cache)`
returns a `ModelOutput` whose `cache` is a plain pytree that goes in and comes back out.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.models.decoder.config import DecoderConfig
from jaxformer.models.layers import ACTIVATION_AXES, run_layers, stacked_blocks
from jaxformer.models.output import ModelOutput
from jaxformer.nn import kv_cache
from jaxformer.nn.attention import Attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.dropout import dropout
from jaxformer.nn.embedding import Embed, LearnedPositions, padded
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.linear import Linear
from jaxformer.nn.moe import MoE, split_stats
from jaxformer.nn.norms import make_norm
from jaxformer.nn.params import normal
from jaxformer.nn.positions import sinusoidal
from jaxformer.nn.sharding import constrain


def make_block(config: DecoderConfig, rngs: nnx.Rngs) -> TransformerBlock:
    c = config
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    # GPT-2 scales the init of the projections that write into the residual stream by 1/sqrt(2N),
    # so the residual's variance does not grow with depth.
    out_init = normal(c.init_std / math.sqrt(2 * c.num_layers))
    attention = Attention(
        c.d_model, c.num_heads, num_kv_heads=c.kv_heads, head_dim=c.head_size, use_bias=c.use_bias,
        causal=True, position=c.position, rope_theta=c.rope_theta, rope_scaling=c.rope_scaling,
        sliding_window=c.sliding_window, pattern=c.pattern, implementation=c.attention_impl,
        init=normal(c.init_std), out_init=out_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if c.moe_num_experts:  # Mixtral, Switch: the feed-forward sublayer becomes E experts
        feed_forward = MoE(
            c.d_model, c.expert_dim, c.moe_num_experts, top_k=c.moe_top_k, activation=c.activation,
            router=c.moe_router, dispatch=c.moe_dispatch, capacity_factor=c.moe_capacity_factor,
            eval_capacity_factor=c.moe_eval_capacity_factor, aux_loss_coef=c.moe_aux_loss_coef,
            z_loss_coef=c.moe_z_loss_coef, init=normal(c.init_std), out_init=out_init, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs)
    else:
        feed_forward = FeedForward(
            c.d_model, c.ffn_dim, activation=c.activation, use_bias=c.use_bias,
            init=normal(c.init_std), out_init=out_init, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs)
    norm = lambda: make_norm(c.norm, c.d_model, eps=c.norm_eps, use_bias=c.use_bias,
                             param_dtype=param_dtype, rngs=rngs)
    return TransformerBlock({"attention": (attention, norm()), "feed_forward": (feed_forward, norm())},
                            norm_position=c.norm_position, dropout_rate=c.dropout)


def last_token(x: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
    """x [batch, time, d] at each row's last real token (the last nonzero segment id; without
    segment ids the last position) -> [batch, d]."""
    time = x.shape[1]
    if segment_ids is None:
        return x[:, -1]
    last = jnp.max(jnp.where(segment_ids != 0, jnp.arange(time), 0), axis=1)
    return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]


class DecoderLM(nnx.Module):
    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.embed = Embed(c.vocab_size, c.d_model, padded_size=c.padded_vocab_size,
                           init_std=c.init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.position_embedding = (
            LearnedPositions(c.max_seq_len, c.d_model, init_std=c.init_std / 2, dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs) if c.position == "learned" else None)
        # scan_layers: one block with a leading "layers" axis on every parameter (models/layers.py).
        self.layers = (stacked_blocks(lambda r: make_block(c, r), c.num_layers, rngs) if c.scan_layers
                       else nnx.List([make_block(c, rngs) for _ in range(c.num_layers)]))
        # Post-norm blocks end in a norm already; pre-norm stacks need one before the head.
        self.final_norm = (make_norm(c.norm, c.d_model, eps=c.norm_eps, use_bias=c.use_bias,
                                     param_dtype=param_dtype, rngs=rngs)
                           if c.norm_position == "pre" else None)
        # A reward model (head "reward") scores a row with one number and has no LM head.
        self.reward_head = (Linear(c.d_model, 1, in_axes=("embed",), out_axes=(None,), use_bias=True,
                                   init=normal(c.init_std), dtype=dtype, param_dtype=param_dtype,
                                   out_dtype=jnp.float32, rngs=rngs)
                            if c.head == "reward" else None)
        self.lm_head = (None if c.tie_embeddings or c.head == "reward" else
                        Linear(c.d_model, c.padded_vocab_size, in_axes=("embed",), out_axes=("vocab",),
                               use_bias=False, init=padded(normal(c.init_std), c.vocab_size, 1),
                               dtype=dtype, param_dtype=param_dtype, out_dtype=jnp.float32, rngs=rngs))

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: list | None = None,
        *,
        dropout_rng: jax.Array | None = None,
    ) -> ModelOutput:
        """tokens: [batch, time] int. positions: [batch, time], default 0..time-1 (required with a
        cache). segment_ids: [batch, time], documents packed in one row get distinct ids, 0 is
        padding; default all one document. cache: from `init_cache`. dropout_rng: a key turns
        dropout on (training); None is evaluation.

        Returns a ModelOutput: logits [batch, time, vocab] float32, cache (updated, or None),
        last_hidden_state [batch, time, embed] (after the final norm); with experts, aux holds the
        load-balancing and router z-losses and stats the router statistics. A reward model
        (`head: reward`) returns `rewards` [batch] float32 (each row's last real token scored,
        see `last_token`) in place of logits.
        """
        c = self.config
        batch, time = tokens.shape
        if positions is None:
            if cache is not None:
                raise ValueError("decoding with a KV cache needs explicit positions")
            positions = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch, time))
        x = self.embed(tokens)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        elif c.position == "sinusoidal":
            x = x + sinusoidal(positions, c.d_model).astype(x.dtype)
        keys = (jax.random.split(dropout_rng, c.num_layers + 1) if dropout_rng is not None
                else None)
        x = dropout(x, c.dropout, None if keys is None else keys[-1])

        x = constrain(x, ACTIVATION_AXES)
        ctx = BlockContext(positions=positions, segment_ids=segment_ids)
        x, new_cache, aux = run_layers(self.layers, x, ctx, cache,
                                       None if keys is None else keys[:c.num_layers],
                                       scan=c.scan_layers, remat=c.remat)

        if self.final_norm is not None:
            x = self.final_norm(x)
        aux, stats = split_stats(aux, c.num_layers if c.moe_num_experts else 0)
        if self.reward_head is not None:
            return ModelOutput(rewards=self.reward_head(last_token(x, segment_ids))[:, 0], cache=new_cache,
                               aux=aux, stats=stats, last_hidden_state=x)
        logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)[..., :c.vocab_size]
        return ModelOutput(logits=constrain(logits, ("batch", "length", "vocab")), cache=new_cache,
                           aux=aux, stats=stats, last_hidden_state=x)

    def init_cache(self, batch: int, max_len: int | None = None) -> list | dict:
        """An empty KV cache for `batch` rows of up to `max_len` (default: the context) tokens:
        a list of per-layer {"attention": KVCache}, or with `scan_layers` one such dict whose
        arrays are stacked on a leading [num_layers] axis (the scan's xs/ys)."""
        c = self.config
        caches = [{"attention": kv_cache.init_layer_cache(
            batch, max_len or c.max_seq_len, c.kv_heads, c.head_size, jnp.dtype(c.dtype))}
            for _ in range(c.num_layers)]
        return jax.tree.map(lambda *a: jnp.stack(a), *caches) if c.scan_layers else caches
