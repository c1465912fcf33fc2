"""Deprecated: import from jaxformer.interop.adapters (adapters in peft's layout sit with the HF
importer, which loads them with `hf.load(base, adapter=dir)`); kept for one release."""

from jaxformer.interop.adapters import OURS, hf_layout, load_adapter, read_adapter, save_adapter

__all__ = ["OURS", "hf_layout", "load_adapter", "read_adapter", "save_adapter"]
