"""The encoder-decoder family's HF converter: T5ForConditionalGeneration,
BartForConditionalGeneration and MarianMTModel, import and export. The tables live in `t5.py` and
`bart.py`; this module picks between them by architecture (on import) or by the config's layout
(on export) and registers the converter."""

from typing import Any

from jaxformer.interop import bart, t5
from jaxformer.interop.converters import Converter, register_converter
from jaxformer.interop.errors import UnsupportedConfigError
from jaxformer.interop.tables import Tensor
from jaxformer.models.encoder_decoder import EncoderDecoderConfig

MODULES = {t5.T5: t5, bart.BART: bart, bart.MARIAN: bart}
MODEL_TYPES = {"t5": t5.T5, "bart": bart.BART, "marian": bart.MARIAN}


def config_from_hf(arch: str, hf_config: dict[str, Any]) -> EncoderDecoderConfig:
    return MODULES[arch].config_from_hf(arch, hf_config)


def config_from_checkpoint(arch: str, config: EncoderDecoderConfig, ckpt) -> EncoderDecoderConfig:
    return MODULES[arch].config_from_checkpoint(arch, config, ckpt)


def export_architecture(config: EncoderDecoderConfig) -> str:
    refusals = []
    for module in (t5, bart):
        try:
            return module.export_architecture(config)
        except UnsupportedConfigError as e:
            refusals.append(str(e))
    raise UnsupportedConfigError("no HuggingFace architecture matches this encoder-decoder: "
                                 + " | ".join(refusals))


def config_to_hf(arch: str, config: EncoderDecoderConfig) -> dict[str, Any]:
    return MODULES[arch].config_to_hf(arch, config)


def tensors(arch: str, config: EncoderDecoderConfig) -> list[Tensor]:
    return MODULES[arch].tensors(arch, config)


CONVERTER = register_converter(Converter(
    family="encoder_decoder", architectures=tuple(MODULES), model_types=MODEL_TYPES,
    config_from_hf=config_from_hf, export_architecture=export_architecture,
    config_to_hf=config_to_hf, tensors=tensors, base_prefix={},
    ignored_suffixes=tuple(sorted(set(t5.IGNORED) | set(bart.IGNORED))),
    config_from_checkpoint=config_from_checkpoint))
