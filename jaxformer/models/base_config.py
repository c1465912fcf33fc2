"""What every family's config shares, written once: `replace`, vocabulary padding, head size and
the settings a composite family hands to its parts.

The bases hold behaviour only, no dataclass fields: each family declares its own fields, so their
names, defaults and order (what YAML presets, saved run configs and the HF converters read) stay
exactly where a reader of that family's config looks for them.

    @dataclasses.dataclass(frozen=True)
    class MyConfig(ModelConfig, VocabPadding, Heads):
        family: str = "my_family"
        vocab_size: int = 32000
        vocab_pad_multiple: int = 128
        ...
"""

import dataclasses
from typing import Any, ClassVar, Self

# How a model computes and is initialised rather than its shape; every family has these fields,
# and CLIP and the image-to-text model pass them on to the configs of their towers.
COMPUTE_FIELDS = ("dropout", "attention_impl", "init_std", "dtype", "param_dtype", "scan_layers",
                  "remat")


class ModelConfig:
    """Base of every family's (frozen dataclass) config."""

    # What the encoder (or a decoder-only model) reads, and so what generation takes as prompts:
    # "tokens" (lists of token ids), "images" or "features" (one float array for the batch).
    encoder_input: ClassVar[str] = "tokens"

    def replace(self, **changes) -> Self:
        """A copy with `changes` applied (the dataclass checks run again)."""
        return dataclasses.replace(self, **changes)

    def compute_settings(self) -> dict[str, Any]:
        """{field: value} of `COMPUTE_FIELDS`, to build a part's config with the same settings."""
        return {name: getattr(self, name) for name in COMPUTE_FIELDS}


class VocabPadding:
    """For configs with `vocab_size` and `vocab_pad_multiple` fields: the embedding table (and an
    untied head) get rows up to the next multiple of `vocab_pad_multiple`, so the vocabulary axis
    shards evenly; counts and HF export use `vocab_size`."""

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: vocab_size rounded up to a multiple of
        vocab_pad_multiple."""
        m = self.vocab_pad_multiple
        return -(-self.vocab_size // m) * m


class Heads:
    """For configs with `d_model` and `num_heads` (and optionally `head_dim`, None meaning
    d_model // num_heads)."""

    @property
    def head_size(self) -> int:
        return getattr(self, "head_dim", None) or self.d_model // self.num_heads
