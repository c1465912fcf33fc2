"""BERT import and export against HuggingFace transformers itself, for all six classes.

Small random models of odd shapes (vocabulary 101, d 36 in 3 heads of 12, feed-forward 52, three
token types, five labels), every weight, bias and LayerNorm scale randomised so a swapped or
mis-transposed tensor shows, are saved with `save_pretrained` and loaded by
`jaxformer.interop.hf`; the float32 outputs must match PyTorch's within 1e-4 on a batch with all
three token types and a right-padded row (compared on its real positions). Exported models must
load back into transformers and match again.
"""

import json

import numpy as np
import pytest

import torch  # the hf extra: missing, this fails rather than skips
import transformers  # the hf extra: missing, this fails rather than skips

import jax.numpy as jnp  # noqa: E402

from jaxformer.interop import hf  # noqa: E402
from jaxformer.interop.errors import UnexpectedTensorError, UnsupportedConfigError  # noqa: E402

ATOL = 1e-4
HF_CONFIG = dict(vocab_size=101, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                 intermediate_size=52, max_position_embeddings=40, type_vocab_size=3,
                 layer_norm_eps=1e-12, num_labels=5)
CLASSES = ("BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
           "BertForTokenClassification", "BertForQuestionAnswering")

# The outputs each class must give (HF's names mapped to ModelOutput's).
EXPECTED = {
    "BertModel": {"last_hidden_state", "pooler_output"},
    "BertForPreTraining": {"logits", "seq_relationship_logits"},
    "BertForMaskedLM": {"logits"},
    "BertForSequenceClassification": {"logits"},
    "BertForTokenClassification": {"logits"},
    "BertForQuestionAnswering": {"start_logits", "end_logits"},
}


def make_hf_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    # HF sizes qa_outputs by num_labels: 2 (start, end) for question answering.
    labels = 2 if name == "BertForQuestionAnswering" else HF_CONFIG["num_labels"]
    model = getattr(transformers, name)(transformers.BertConfig(**{**HF_CONFIG, "num_labels": labels}))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            is_scale = p.ndim == 1 and "LayerNorm" in pname and pname.endswith("weight")
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if is_scale else 0.1 * torch.randn_like(p))
    return model.eval()


def batch():
    """Three rows of 17 tokens: token types 0/1/2 in every row, the last row right-padded."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, HF_CONFIG["vocab_size"], size=(3, 17))
    token_types = np.zeros_like(tokens)
    token_types[:, 6:11], token_types[:, 11:] = 1, 2
    mask = np.ones_like(tokens)
    mask[2, 12:] = 0
    tokens[2, 12:] = 0
    return tokens, token_types, mask


def hf_outputs(model, tokens, token_types, mask) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), token_type_ids=torch.tensor(token_types),
                    attention_mask=torch.tensor(mask))
    names = {"last_hidden_state": "last_hidden_state", "pooler_output": "pooler_output",
             "prediction_logits": "logits", "seq_relationship_logits": "seq_relationship_logits",
             "logits": "logits", "start_logits": "start_logits", "end_logits": "end_logits"}
    return {ours: getattr(out, theirs).numpy() for theirs, ours in names.items()
            if getattr(out, theirs, None) is not None}


def our_outputs(model, tokens, token_types, mask) -> dict[str, np.ndarray]:
    out = model(jnp.asarray(tokens), token_types=jnp.asarray(token_types),
                segment_ids=jnp.asarray(mask))
    fields = ("last_hidden_state", "pooler_output", "logits", "seq_relationship_logits",
              "start_logits", "end_logits")
    return {name: np.asarray(getattr(out, name)) for name in fields
            if getattr(out, name) is not None}


def assert_match(ours: dict, theirs: dict, mask: np.ndarray) -> None:
    """Every output HF gives, on real positions only where it has a time axis."""
    assert set(theirs) <= set(ours), (sorted(theirs), sorted(ours))
    real = mask.astype(bool)
    for name, expected in theirs.items():
        got = ours[name]
        assert got.shape == expected.shape, (name, got.shape, expected.shape)
        if expected.ndim >= 2 and expected.shape[1] == mask.shape[1]:
            got, expected = got[real], expected[real]
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0, err_msg=name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    dirs = {}
    for name in CLASSES:
        model = make_hf_model(name)
        model.save_pretrained(root / name)
        dirs[name] = (root / name, model)
    return dirs


@pytest.mark.parametrize("name", CLASSES)
def test_import_matches_transformers(saved, name):
    path, hf_model = saved[name]
    config, model = hf.load(path)
    assert config.head == {"BertModel": "none", "BertForPreTraining": "pretraining",
                           "BertForMaskedLM": "masked_lm",
                           "BertForSequenceClassification": "classification",
                           "BertForTokenClassification": "token_classification",
                           "BertForQuestionAnswering": "span_qa"}[name]
    tokens, token_types, mask = batch()
    theirs = hf_outputs(hf_model, tokens, token_types, mask)
    assert set(theirs) >= EXPECTED[name], sorted(theirs)
    assert_match(our_outputs(model, tokens, token_types, mask), theirs, mask)
    # The parameter count equals HF's (the tied decoder counted once, no vocabulary padding).
    from jaxformer import count_params
    assert count_params(config) == hf_model.num_parameters()


@pytest.mark.parametrize("name", CLASSES)
def test_export_loads_in_transformers(saved, name, tmp_path):
    path, _ = saved[name]
    config, model = hf.load(path)
    hf.save(tmp_path / "out", config, model)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [name]
    reloaded = getattr(transformers, name).from_pretrained(tmp_path / "out").eval()
    tokens, token_types, mask = batch()
    assert_match(our_outputs(model, tokens, token_types, mask),
                 hf_outputs(reloaded, tokens, token_types, mask), mask)


def test_pretraining_checkpoint_loads_as_masked_lm(saved, tmp_path):
    """bert-base-uncased is published as BertForMaskedLM with the pooler and NSP head inside:
    those are skipped, anything else unexpected is an error naming the tensor."""
    path, hf_model = saved["BertForPreTraining"]
    hf_config = json.loads((path / "config.json").read_text())
    hf_config["architectures"] = ["BertForMaskedLM"]
    target = tmp_path / "as_mlm"
    target.mkdir()
    (target / "model.safetensors").symlink_to(path / "model.safetensors")
    (target / "config.json").write_text(json.dumps(hf_config))
    config, model = hf.load(target)
    tokens, token_types, mask = batch()
    out = our_outputs(model, tokens, token_types, mask)
    expected = hf_outputs(hf_model, tokens, token_types, mask)["logits"]
    np.testing.assert_allclose(out["logits"][mask.astype(bool)], expected[mask.astype(bool)],
                               atol=ATOL, rtol=0)

    hf_config["num_hidden_layers"] = 1  # layer 1's tensors are now unexpected
    (target / "config.json").write_text(json.dumps(hf_config))
    with pytest.raises(UnexpectedTensorError, match="encoder.layer.1"):
        hf.load(target)


def test_pre_norm_encoder_has_no_hf_class(tmp_path):
    from flax import nnx

    from jaxformer.models import build_model
    from jaxformer.models.encoder_config import EncoderConfig

    config = EncoderConfig(head="masked_lm", vocab_size=50, d_model=16, num_layers=1, num_heads=2,
                           mlp_dim=24, max_seq_len=8, norm_position="pre")
    with pytest.raises(UnsupportedConfigError, match="norm_position='pre'"):
        hf.save(tmp_path, config, build_model(config, rngs=nnx.Rngs(0)))
