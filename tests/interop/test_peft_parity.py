"""peft LoRA adapters against peft itself, on small random GPT-2 and Llama models with non-zero B:
`hf.load(base, adapter=dir)` gives peft's logits within 1e-4 (GPT-2's Conv1D layers with
fan_in_fan_out, the fused c_attn split into query/key/value), adapters we train export in
peft's layout and peft loads them to our logits, and adapters of a model no HF class reproduces
round-trip in the same layout under jaxformer's module names."""

import json

import numpy as np
import pytest

import peft  # noqa: E402  (the hf extra: missing, these tests fail, not skip)
import torch  # noqa: E402
import transformers  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxformer.finetune import lora as L  # noqa: E402
from jaxformer.finetune.adapters import load_adapter, save_adapter  # noqa: E402
from jaxformer.interop import hf  # noqa: E402
from jaxformer.interop.errors import CheckpointError  # noqa: E402
from jaxformer.models import DecoderConfig, build_model  # noqa: E402

ATOL = 1e-4
VOCAB = 53

CASES = {
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
        eos_token_id=0)), ["c_attn", "c_proj", "c_fc"], True),
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=32,
        tie_word_embeddings=False)),
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], False),
}


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(ids)).logits.numpy()


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    torch.manual_seed(0)
    make, targets, fan_in_fan_out = CASES[request.param]
    model = make().eval()
    with torch.no_grad():  # biases and norms too, so a misplaced tensor shows
        for p in model.parameters():
            p.normal_(0, 0.2)
    base = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(base)
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=targets,
                             fan_in_fan_out=fan_in_fan_out, rank_pattern={"c_fc": 2, "up_proj": 2},
                             alpha_pattern={"c_fc": 3.0})
    tuned = peft.get_peft_model(model, config).eval()
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    adapter = base / "adapter"
    tuned.save_pretrained(adapter)
    return request.param, base, adapter, tuned


def test_peft_adapter_loads_to_peft_logits(checkpoint):
    name, base, adapter, tuned = checkpoint
    ids = np.random.default_rng(1).integers(0, VOCAB, (2, 9))
    want = torch_logits(tuned, ids)
    config, model = hf.load(base, adapter=adapter)
    got = np.asarray(model(jnp.asarray(ids)).logits)
    np.testing.assert_allclose(got, want, atol=ATOL)
    _, plain = hf.load(base)
    assert np.abs(np.asarray(plain(jnp.asarray(ids)).logits) - want).max() > 100 * ATOL
    if name == "gpt2":  # c_attn became three adapters sharing A
        q, k = model.layers[0].attention.query.lora, model.layers[0].attention.key.lora
        np.testing.assert_array_equal(np.asarray(q.a.get_value()), np.asarray(k.a.get_value()))


def test_our_adapters_export_to_peft(checkpoint, tmp_path):
    name, base, _, _ = checkpoint
    config, model = hf.load(base)
    L.attach_lora(model, targets=["query", "value", "down"], rank=3, alpha=6, rngs=nnx.Rngs(0))
    for i, module in enumerate(L.lora_modules(model).values()):
        shape = module.lora.b.get_value().shape
        module.lora.b.set_value(0.3 * jax.random.normal(jax.random.key(i), shape))
    ids = np.random.default_rng(2).integers(0, VOCAB, (2, 9))
    ours = np.asarray(model(jnp.asarray(ids)).logits)
    save_adapter(tmp_path / "ours", model, config)
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    if name == "gpt2":  # query + value stacked into c_attn: rank 6, the scaling kept
        assert saved["fan_in_fan_out"] is True and set(saved["target_modules"]) == {"c_attn", "c_proj"}
    cls = transformers.AutoModelForCausalLM
    restored = peft.PeftModel.from_pretrained(cls.from_pretrained(base), tmp_path / "ours").eval()
    np.testing.assert_allclose(torch_logits(restored, ids), ours, atol=ATOL)
    # and back into jaxformer from the file
    _, again = hf.load(base, adapter=tmp_path / "ours")
    np.testing.assert_allclose(np.asarray(again(jnp.asarray(ids)).logits), ours, atol=1e-5)


def test_adapters_of_a_model_without_an_hf_class_round_trip(tmp_path):
    config = DecoderConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, max_seq_len=16,
                           use_bias=False, vocab_pad_multiple=1)  # GPT-2 needs biases: no HF class
    model = build_model(config, rngs=nnx.Rngs(0))
    L.attach_lora(model, targets=["query", "out", "up"], rank=2, alpha=5, rngs=nnx.Rngs(1))
    for i, module in enumerate(L.lora_modules(model).values()):
        shape = module.lora.b.get_value().shape
        module.lora.b.set_value(0.3 * jax.random.normal(jax.random.key(i), shape))
    tokens = jnp.asarray([[1, 2, 3, 4]])
    want = np.asarray(model(tokens).logits)
    save_adapter(tmp_path / "a", model, config)
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["jaxformer"]["module_names"] == "jaxformer" and saved["r"] == 2
    fresh = build_model(config, rngs=nnx.Rngs(0))
    load_adapter(fresh, tmp_path / "a", config)
    np.testing.assert_allclose(np.asarray(fresh(tokens).logits), want, atol=1e-6)
    with pytest.raises(CheckpointError, match="already holds an adapter"):
        save_adapter(tmp_path / "a", model, config)
    with pytest.raises(CheckpointError, match="not a peft adapter directory"):
        load_adapter(fresh, tmp_path, config)
