"""The encoder (BERT): bidirectional self-attention over a sequence, with a head for the task.

    tokens, token types, positions -> word + token-type + learned position embeddings -> LayerNorm
        -> dropout -> N x TransformerBlock (post-LN, erf GELU; no causal mask)
        -> [final norm, pre-norm only] -> last_hidden_state
        -> pooler (tanh dense on [CLS]) -> the head `config.head` names (see heads.py)

Call: `model(tokens, token_types=None, segment_ids=None, positions=None)` -> `ModelOutput`:

    head                  logits                   other fields
    none                  None                     last_hidden_state, pooler_output
    pretraining           [batch, time, vocab]     seq_relationship_logits [batch, 2], pooler_output
    masked_lm             [batch, time, vocab]
    classification        [batch, num_labels]      pooler_output
    token_classification  [batch, time, labels]
    span_qa               None                     start_logits, end_logits [batch, time]

Segment id 0 is padding: no token attends to it. Several sequences may be packed in one row with
ids 1, 2, ...: each attends only within itself and its positions restart at 0 (computed from the
segment ids when `positions` is not given). The pooler reads each row's first token.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxformer.models.encoder.config import EncoderConfig
from jaxformer.models.encoder.heads import MaskedLMHead, Pooler, dense, gather_positions
from jaxformer.models.layers import ACTIVATION_AXES, run_layers, stacked_blocks
from jaxformer.models.output import ModelOutput
from jaxformer.nn.attention import Attention
from jaxformer.nn.block import TransformerBlock
from jaxformer.nn.context import BlockContext
from jaxformer.nn.dropout import dropout
from jaxformer.nn.embedding import Embed, LearnedPositions
from jaxformer.nn.feedforward import FeedForward
from jaxformer.nn.norms import LayerNorm
from jaxformer.nn.params import normal, param
from jaxformer.nn.sharding import constrain


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """[batch, time] segment ids -> each token's index within its run of equal ids (0, 1, ...)."""
    time = segment_ids.shape[1]
    index = jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), segment_ids.shape)
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                              segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


class TokenTypeEmbed(nnx.Module):
    """BERT's segment (sentence A / B) table, [type_vocab_size, embed]; its few rows stay whole."""

    def __init__(self, num_types: int, dim: int, *, init_std: float, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = param(rngs.params(), normal(init_std), (num_types, dim), (None, "embed"),
                               param_dtype)

    def __call__(self, token_types: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], token_types, axis=0).astype(self.dtype)


class EncoderEmbeddings(nnx.Module):
    """word + token type + position, then LayerNorm (BertEmbeddings; dropout is the caller's)."""

    def __init__(self, c: EncoderConfig, *, rngs: nnx.Rngs):
        common = dict(init_std=c.init_std, dtype=jnp.dtype(c.dtype),
                      param_dtype=jnp.dtype(c.param_dtype), rngs=rngs)
        self.word = Embed(c.vocab_size, c.d_model, padded_size=c.padded_vocab_size, **common)
        self.position = LearnedPositions(c.max_seq_len, c.d_model, **common)
        self.token_type = TokenTypeEmbed(c.type_vocab_size, c.d_model, **common)
        self.norm = LayerNorm(c.d_model, eps=c.norm_eps, param_dtype=jnp.dtype(c.param_dtype),
                              rngs=rngs)

    def __call__(self, tokens, token_types, positions) -> jax.Array:
        x = self.word(tokens) + self.token_type(token_types) + self.position(positions)
        return self.norm(x)


def make_block(c: EncoderConfig, rngs: nnx.Rngs) -> TransformerBlock:
    dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    attention = Attention(c.d_model, c.num_heads, head_dim=c.head_size, use_bias=True, causal=False,
                          position="none", implementation=c.attention_impl,
                          init=normal(c.init_std), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    feed_forward = FeedForward(c.d_model, c.mlp_dim, activation=c.activation, use_bias=True,
                               init=normal(c.init_std), dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)
    norm = lambda: LayerNorm(c.d_model, eps=c.norm_eps, param_dtype=param_dtype, rngs=rngs)
    return TransformerBlock({"attention": (attention, norm()), "feed_forward": (feed_forward, norm())},
                            norm_position=c.norm_position, dropout_rate=c.dropout)


class Encoder(nnx.Module):
    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        common = dict(init_std=c.init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = EncoderEmbeddings(c, rngs=rngs)
        self.layers = (stacked_blocks(lambda r: make_block(c, r), c.num_layers, rngs) if c.scan_layers
                       else nnx.List([make_block(c, rngs) for _ in range(c.num_layers)]))
        self.final_norm = (LayerNorm(c.d_model, eps=c.norm_eps, param_dtype=param_dtype, rngs=rngs)
                           if c.norm_position == "pre" else None)
        self.pooler = Pooler(c.d_model, **common) if c.has_pooler else None
        self.mlm = (MaskedLMHead(c.d_model, c.vocab_size, c.padded_vocab_size,
                                 activation=c.activation, norm_eps=c.norm_eps, **common)
                    if c.has_mlm else None)
        outputs = {"pretraining": 2, "classification": c.num_labels,
                   "token_classification": c.num_labels, "span_qa": 2}.get(c.head)
        # nsp (pretraining), classifier (classification heads) or qa (span_qa): one dense layer.
        name = {"pretraining": "nsp", "span_qa": "qa"}.get(c.head, "classifier")
        if outputs is not None:
            setattr(self, name, dense(c.d_model, outputs, out_dtype=jnp.float32, **common))

    def __call__(
        self,
        tokens: jax.Array,
        token_types: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        *,
        masked_positions: jax.Array | None = None,
        dropout_rng: jax.Array | None = None,
    ) -> ModelOutput:
        """tokens, token_types (default 0), segment_ids (0 = padding; default: no padding),
        positions (default: from the segment ids): [batch, time] int.

        masked_positions: [batch, n] indices into time. With a masked-LM head, the logits are
        computed at these positions only ([batch, n, vocab]), as Google's BERT pretraining does:
        the vocabulary projection of the other tokens is never needed for the loss.
        dropout_rng: a key turns dropout on (training); None is evaluation."""
        c = self.config
        if token_types is None:
            token_types = jnp.zeros_like(tokens)
        if positions is None:
            positions = (segment_positions(segment_ids) if segment_ids is not None else
                         jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape))
        # One key per layer, then the embeddings' and the classifier's.
        keys = (jax.random.split(dropout_rng, c.num_layers + 2) if dropout_rng is not None
                else None)
        embedding_key, classifier_key = (None, None) if keys is None else (keys[-2], keys[-1])
        layer_keys = None if keys is None else keys[:c.num_layers]
        x = dropout(self.embeddings(tokens, token_types, positions), c.dropout, embedding_key)
        x = constrain(x, ACTIVATION_AXES)
        ctx = BlockContext(positions=positions, segment_ids=segment_ids)
        x, _, aux = run_layers(self.layers, x, ctx, None, layer_keys, scan=c.scan_layers,
                               remat=c.remat)
        if self.final_norm is not None:
            x = self.final_norm(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        out = dict(last_hidden_state=x, pooler_output=pooled, aux=aux)
        if c.has_mlm:
            h = x if masked_positions is None else gather_positions(x, masked_positions)
            out["logits"] = self.mlm(h, self.embeddings.word)
        if c.head == "pretraining":
            out["seq_relationship_logits"] = self.nsp(pooled)
        elif c.head in ("classification", "token_classification"):
            rate = c.dropout if c.classifier_dropout is None else c.classifier_dropout
            features = pooled if c.head == "classification" else x
            out["logits"] = self.classifier(dropout(features, rate, classifier_key))
        elif c.head == "span_qa":
            logits = self.qa(x)
            out["start_logits"], out["end_logits"] = logits[..., 0], logits[..., 1]
        return ModelOutput(**out)
