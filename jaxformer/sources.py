"""Where a model to use comes from (`jaxformer generate`, `attention` and the encoder commands):
a `jaxformer train` run directory or an HF directory.

    run directory (config.yaml, tokenizer/, checkpoints/): the latest checkpoint and the run's
        own tokenizer.
    HF directory (config.json + model.safetensors): the imported model; its tokenizer is, in
        order, `--tokenizer PATH` (a sentencepiece `.model`, a `tokenizer.json` or a WordPiece
        `vocab.txt`), the directory's `vocab.txt` (BERT's WordPiece, with
        `tokenizer_config.json`'s do_lower_case), its `tokenizer.json` (read with the
        `tokenizers` package when installed), its sentencepiece `tokenizer.model`, T5's
        `spiece.model` or Marian's `source.spm` / `target.spm` / `vocab.json`; with none of
        these, prompts are given as token ids (`--prompt-ids`) and the output is token ids.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
from flax import nnx

from jaxformer.data import CharTokenizer, SentencePieceTokenizer, WordPieceTokenizer, load_tokenizer
from jaxformer.errors import UserError
from jaxformer.interop import hf
from jaxformer.interop.hf_tokenizers import sentencepiece_tokenizer
from jaxformer.models import abstract_model
from jaxformer.models.layers import unstack_all_layers
from jaxformer.train.run_dir import load_run


@dataclasses.dataclass
class Source:
    model: nnx.Module  # a model that generates (a decoder LM or an encoder-decoder)
    tokenizer: object | None  # encode/decode/vocab_size/pieces, or None (token ids only)
    stop_tokens: list[int]  # end-of-text ids the model was trained to emit
    kind: str  # "run" | "hf"


class HFTokenizer:
    """A `tokenizer.json` read with HuggingFace's `tokenizers` package, with the same methods as
    jaxformer's tokenizers. encode adds the special tokens the file's post-processor asks for
    (Llama's BOS), as transformers does."""

    def __init__(self, path: Path):
        try:
            from tokenizers import Tokenizer  # optional dependency: only for tokenizer.json
        except ImportError:
            raise UserError(f"{path} needs the `tokenizers` package: `pip install tokenizers`, or "
                            f"pass the prompt as token ids with --prompt-ids") from None
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the package raises a bare Exception for a malformed file
            raise UserError(f"cannot read {path} as a tokenizers file: {e}") from None
        self.eos_id = None
        self.pad_id = None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).ravel()], skip_special_tokens=True)

    def pieces(self, ids) -> list[str]:
        return [self._tok.id_to_token(int(i)) or f"<{int(i)}>" for i in np.asarray(ids).ravel()]


def _tokenizer_from_file(path: Path):
    """--tokenizer PATH: a directory with a saved jaxformer tokenizer (a run's tokenizer/), a
    sentencepiece `.model`, a HuggingFace `tokenizer.json`, or a jaxformer character vocabulary."""
    path = path.expanduser()
    if not path.exists():
        raise UserError(f"tokenizer file {path} does not exist")
    if path.is_dir():
        return load_tokenizer(path)
    if path.suffix == ".json":
        try:
            is_char = json.loads(path.read_text()).get("type") == "char"
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise UserError(f"{path} is not a tokenizer JSON file") from None
        return CharTokenizer.load(path) if is_char else HFTokenizer(path)
    if path.suffix == ".model":
        return SentencePieceTokenizer.load(path)
    if path.suffix == ".txt":
        return WordPieceTokenizer.load(path)
    raise UserError(f"--tokenizer {path}: expected a sentencepiece .model, a tokenizer.json, a "
                    f"WordPiece vocab.txt or a directory holding a saved tokenizer")


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _hf_stop_tokens(path: Path) -> list[int]:
    """EOS ids from config.json / generation_config.json (an int or a list in HF files)."""
    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        file = path / name
        if file.is_file():
            value = json.loads(file.read_text()).get("eos_token_id")
            ids.update([value] if isinstance(value, int) else value or [])
    return sorted(ids)


def load_source(path: str | Path, *, tokenizer: str | Path | None = None,
                attention_impl: str | None = None, log=None) -> Source:
    """The model (and tokenizer) in a run directory or an HF directory; see the module docstring.
    `attention_impl` rebuilds the model with another attention implementation (e.g. "einsum")."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist: give a run directory of `jaxformer train` or a "
                        f"HuggingFace model directory (config.json + model.safetensors)")
    if is_run_dir(path):
        _, model, tok = load_run(path, **({"log": log} if log else {}))
        if tokenizer is not None:
            tok = _tokenizer_from_file(Path(tokenizer))
        stops = [tok.eos_id] if getattr(tok, "eos_id", None) is not None else []
        kind = "run"
    elif is_hf_dir(path):
        _, model = hf.load(path)
        if tokenizer is not None:
            tok = _tokenizer_from_file(Path(tokenizer))
        elif (path / "vocab.txt").is_file():  # BERT: WordPiece, its special tokens known
            tok = _tokenizer_from_file(path / "vocab.txt")
        elif (path / "tokenizer.json").is_file():
            tok = HFTokenizer(path / "tokenizer.json")
        elif (path / "tokenizer.model").is_file():
            tok = _tokenizer_from_file(path / "tokenizer.model")
        else:
            tok = sentencepiece_tokenizer(path)  # T5's spiece.model, Marian's source/target.spm
        stops = _hf_stop_tokens(path)
        kind = "hf"
    else:
        raise UserError(f"{path} is neither a run directory (config.yaml) nor a HuggingFace model "
                        f"directory (config.json): point at one of those")
    if tok is not None and tok.vocab_size > model.config.vocab_size:
        raise UserError(f"the tokenizer has {tok.vocab_size} tokens but the model only "
                        f"{model.config.vocab_size}: pass the tokenizer the model was trained with")
    if attention_impl is not None and attention_impl != model.config.attention_impl:
        model = with_attention_impl(model, attention_impl)
    return Source(model, tok, stops, kind)


def with_attention_impl(model, attention_impl: str):
    """The same parameters in a model that computes attention with `attention_impl`, laid out
    per layer (so that intermediates sown by each layer's attention can be read)."""
    config = model.config
    state = nnx.state(model)
    if getattr(config, "scan_layers", False):
        state = unstack_all_layers(state)
    new_config = config.replace(attention_impl=attention_impl, scan_layers=False)
    graphdef, _ = nnx.split(abstract_model(new_config))
    return nnx.merge(graphdef, state)
