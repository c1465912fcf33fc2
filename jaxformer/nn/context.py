"""What every sublayer of a block may need besides its input, passed as one object.

A block's sublayers need different things: self-attention needs positions and segment ids,
cross-attention the encoder's output (the memory) and its padding, dropout a key. Passing one
`BlockContext` down the stack (through scan and remat too) keeps the call signatures fixed as
families add needs.
"""

import jax
from flax import struct


@struct.dataclass
class BlockContext:
    positions: jax.Array  # [batch, time] int: each token's position in its document
    segment_ids: jax.Array | None = None  # [batch, time]: packed documents 1, 2, ...; 0 padding
    memory: jax.Array | None = None  # [batch, memory_len, embed]: what cross-attention reads
    memory_segment_ids: jax.Array | None = None  # [batch, memory_len]; 0 marks padding
    dropout_rng: jax.Array | None = None  # a key turns dropout on (training); None: evaluation
    # [batch or 1, heads, time, key_time], added to self-attention scores in every layer of a
    # stack (T5's relative position bias, computed once per stack; see nn/relative_position.py).
    attention_bias: jax.Array | None = None
