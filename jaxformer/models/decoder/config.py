"""The decoder LM's configuration: one dataclass covers GPT-2, Llama and their relatives."""

import dataclasses

from jaxformer.models.base_config import Heads, ModelConfig, VocabPadding
from jaxformer.models.validation import (NORMS, check_choice, check_compute, check_fraction,
                                         check_heads, check_positive)
from jaxformer.nn.feedforward import ACTIVATIONS, GATED
from jaxformer.nn.moe import DISPATCHES, ROUTERS
from jaxformer.nn.positions import RopeScaling
from jaxformer.nn.sparse_attention import PATTERNS, SparsePattern, make_pattern

POSITIONS = ("learned", "rope", "sinusoidal", "alibi", "none")
HEADS = ("lm", "reward")


@dataclasses.dataclass(frozen=True)
class DecoderConfig(ModelConfig, VocabPadding, Heads):
    """Sizes use the standard names: V vocab_size, D d_model, T max_seq_len, H num_heads,
    I mlp_dim (feed-forward width), L num_layers.

    `vocab_pad_multiple`: the embedding table (and an untied head) get rows up to the next multiple
    of this (GPT-2's 50,257 -> 50,304 for 128), so the vocabulary axis shards evenly; the padding
    rows start at zero, stay there, and are cut from the logits. 1 turns padding off. Parameter
    counts, HF export and everything a user sees use `vocab_size`."""

    family: str = "decoder"
    vocab_size: int = 50257
    vocab_pad_multiple: int = 128
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    num_kv_heads: int | None = None  # None: = num_heads (MHA); 1: MQA; a divisor: GQA
    head_dim: int | None = None  # None: d_model // num_heads
    mlp_dim: int | None = None  # explicit feed-forward width; None: mlp_ratio * d_model
    mlp_ratio: float = 4.0
    max_seq_len: int = 1024
    position: str = "learned"  # learned | rope | sinusoidal | alibi | none
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None  # Llama-3.1 frequency scaling
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    norm_position: str = "pre"  # pre (GPT-2, Llama) | post (2017 Transformer)
    activation: str = "gelu_tanh"  # gelu | gelu_tanh | relu | silu | swiglu | geglu | reglu
    use_bias: bool = True  # biases in attention and feed-forward projections (and LayerNorm)
    tie_embeddings: bool = True  # LM head = token embedding transposed
    # lm: next-token logits. reward: a reward model, a Linear(d_model, 1) on the final hidden
    # state of each row's last real token (the last with a nonzero segment id) -> `rewards` [batch];
    # no LM head, `logits` is None.
    head: str = "lm"
    dropout: float = 0.0  # on embeddings and residual branches
    sliding_window: int | None = None  # attend to at most this many previous tokens
    # Sparse attention (nn/sparse_attention.py): strided | fixed (Child et al. 2019, `sparse_stride`
    # l, `sparse_summary` c) | global_local (sliding_window + `sparse_global_tokens`).
    sparse_pattern: str | None = None
    sparse_stride: int = 128
    sparse_summary: int = 16
    sparse_global_tokens: int = 0
    # xla | einsum (dense; einsum can return attention weights) | chunked (O(T) memory, block-
    # sparse) | cudnn | splash (TPU) | pallas_gpu | auto (per backend and shape): see
    # nn/attention_kernels.py. Under mesh.context > 1 self-attention is ring attention.
    attention_impl: str = "xla"
    init_std: float = 0.02
    dtype: str = "float32"  # activations / compute
    param_dtype: str = "float32"
    scan_layers: bool = False  # one compiled layer body scanned over a stacked "layers" axis
    remat: str = "auto"  # auto (none on a CPU, keep_weights on accelerators) | none | keep_weights | dots_saveable | full
    # Mixture of experts (nn/moe.py): moe_num_experts > 0 swaps every feed-forward sublayer for
    # E experts of width moe_mlp_dim (default mlp_dim), moe_top_k of them per token.
    moe_num_experts: int = 0
    moe_top_k: int = 2
    moe_mlp_dim: int | None = None
    moe_router: str = "topk_softmax"  # topk_softmax (Mixtral) | softmax_topk (Switch, GShard)
    moe_dispatch: str = "dropless"  # dropless (sorted tokens, grouped matmul) | capacity (Switch)
    moe_capacity_factor: float = 1.25  # capacity dispatch, training (Switch)
    moe_eval_capacity_factor: float = 2.0  # capacity dispatch, evaluation and generation
    moe_aux_loss_coef: float = 0.01  # load-balancing loss weight (Switch)
    moe_z_loss_coef: float = 0.001  # router z-loss weight (ST-MoE)

    def __post_init__(self):
        check_choice(self, "position", POSITIONS)
        check_choice(self, "norm", NORMS)
        check_choice(self, "norm_position", ("pre", "post"))
        check_choice(self, "head", HEADS)
        check_choice(self, "activation", tuple(ACTIVATIONS) + tuple(GATED))
        check_compute(self)
        check_positive(self, "vocab_size", "vocab_pad_multiple", "d_model", "num_layers", "num_heads",
                       "max_seq_len")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"model.num_kv_heads={self.num_kv_heads} must divide "
                             f"model.num_heads={self.num_heads}")
        check_heads(self)
        if self.position == "rope" and self.head_size % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_size}")
        check_fraction(self, "dropout")
        if self.sparse_pattern is not None:
            check_choice(self, "sparse_pattern", PATTERNS[1:])
        try:
            self.pattern  # noqa: B018  (validates the pattern's sizes)
        except ValueError as e:
            raise ValueError(f"model.sparse_pattern: {e}") from None
        if self.moe_num_experts:
            check_choice(self, "moe_router", ROUTERS)
            check_choice(self, "moe_dispatch", DISPATCHES)
            if not 1 <= self.moe_top_k <= self.moe_num_experts:
                raise ValueError(f"model.moe_top_k={self.moe_top_k} must be between 1 and "
                                 f"model.moe_num_experts={self.moe_num_experts}")
            if self.moe_capacity_factor <= 0 or self.moe_eval_capacity_factor <= 0:
                raise ValueError("model.moe_capacity_factor and model.moe_eval_capacity_factor "
                                 "must be positive")
        elif self.moe_num_experts < 0:
            raise ValueError(f"model.moe_num_experts must be >= 0, got {self.moe_num_experts}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.mlp_dim or int(self.mlp_ratio * self.d_model)

    @property
    def expert_dim(self) -> int:
        """Each expert's feed-forward width (mixture of experts)."""
        return self.moe_mlp_dim or self.ffn_dim

    @property
    def pattern(self) -> SparsePattern | None:
        """The attention's sparse pattern (sliding window included), or None for full."""
        return make_pattern(self.sliding_window, self.sparse_pattern, stride=self.sparse_stride,
                            summary=self.sparse_summary, global_tokens=self.sparse_global_tokens)
