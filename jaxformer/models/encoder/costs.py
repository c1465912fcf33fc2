"""The encoder's parameter counts (as HF's `num_parameters()`) and training FLOPs."""

import jax

from jaxformer.models.counting import DENSE, ParamCounts, leaf_size, param_shapes, path_keys
from jaxformer.models.encoder.config import EncoderConfig

# Top-level modules -> the part they are counted in.
PARTS = {"pooler": "pooler", "mlm": "masked_lm_head", "nsp": "nsp_head", "classifier": "classifier",
         "qa": "qa_head", "final_norm": "norms"}
EMBEDDINGS = {"word": "token_embedding", "position": "positions", "token_type": "token_types",
              "norm": "norms"}


def encoder_param_counts(config: EncoderConfig) -> ParamCounts:
    """Counted on a one-layer copy, its layer counted `num_layers` times (see
    `decoder.costs.decoder_param_counts`); the padded rows of the word table and the MLM bias are
    not counted, and the tied MLM decoder is the word table (counted once)."""
    state = param_shapes(config.replace(num_layers=1, scan_layers=False))
    groups = dict.fromkeys(("token_embedding", "positions", "token_types", "attention",
                            "feed_forward", "norms"), 0)
    per_layer = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        keys = [k for k in path_keys(path) if k != "value"]  # a Variable's leaf ends in "value"
        size = leaf_size(leaf)
        if keys[0] == "layers":
            sublayer = keys[2]
            group = sublayer if sublayer in ("attention", "feed_forward") else "norms"
            per_layer += size
            size *= config.num_layers
        elif keys[0] == "embeddings":
            group = EMBEDDINGS[keys[1]]
        else:
            group = PARTS[keys[0]]
        if keys in (["embeddings", "word", "embedding"], ["mlm", "bias"]):  # padded vocab rows
            size = size // config.padded_vocab_size * config.vocab_size
        groups[group] = groups.get(group, 0) + size
    return ParamCounts(groups, num_layers=config.num_layers, per_layer=per_layer,
                       positional=("positions", "token_types"))


def encoder_flops_parts(config: EncoderConfig, seq_len: int | None = None) -> dict[str, int]:
    """Training FLOPs per token (PaLM appendix B): 6N for the weight matmuls, N the parameters
    less the position and token-type tables (and less the word table when no masked-LM head
    multiplies by it: then it is only looked up); 12 * layers * heads * head_dim * T for the
    attention scores and weighted values, all T x T of them (no causal mask to halve it). A
    masked-LM head counts at every position; trained with `masked_positions` it runs on fewer."""
    seq_len = seq_len or config.max_seq_len
    counts = encoder_param_counts(config)
    n = counts.non_positional - (0 if config.has_mlm else counts.groups["token_embedding"])
    return {DENSE: 6 * n,
            "12 x layers x d_model x T (attention, bidirectional)":
                12 * config.num_layers * config.num_heads * config.head_size * seq_len}

