"""`ModelOutput`: what every model call returns, one pytree for every family.

    out = model(tokens)
    out.logits              # float32, the main head's output: [batch, time, vocab] for a language
                            # model, [batch, labels] for a classifier
    out.cache               # the updated decoding cache (None outside decoding)
    out.aux                 # {name: scalar}: losses the model adds (MoE load balancing, router
                            # z-loss), weighted by `task.aux_weights` and logged by name
    out.stats               # {name: scalar}: statistics the training loop logs but does not
                            # train on (an MoE router's load per expert, dropped tokens)

Family-specific fields carry HuggingFace's names, so code ported from transformers reads the same.
Fields a family does not produce stay None (an empty pytree: jit and scan carry nothing for them).
"""

from typing import Any

import jax
from flax import struct


@struct.dataclass
class ModelOutput:
    logits: jax.Array | None = None
    cache: Any = None
    aux: dict[str, jax.Array] = struct.field(default_factory=dict)
    stats: dict[str, jax.Array] = struct.field(default_factory=dict)
    last_hidden_state: jax.Array | None = None  # [batch, time, embed], after the final norm
    pooler_output: jax.Array | None = None  # [batch, embed] (BERT: dense + tanh on [CLS])
    seq_relationship_logits: jax.Array | None = None  # [batch, 2] (BERT next-sentence prediction)
    start_logits: jax.Array | None = None  # [batch, time] (extractive QA)
    end_logits: jax.Array | None = None  # [batch, time]
    logits_per_text: jax.Array | None = None  # [texts, images] (CLIP)
    logits_per_image: jax.Array | None = None  # [images, texts]
    text_embeds: jax.Array | None = None  # [texts, projection]
    image_embeds: jax.Array | None = None  # [images, projection]
    encoder_last_hidden_state: jax.Array | None = None  # [batch, source_time, embed] (seq2seq)
    rewards: jax.Array | None = None  # [batch] float32 (a reward model: the last real token's score)
