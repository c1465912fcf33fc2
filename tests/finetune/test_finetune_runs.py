"""Fine-tuning runs end to end: a run starts from a base run's checkpoint or from an HF directory
(its weights exactly), reuses the base run's tokenizer, trains only what its mode selects, and a
LoRA run leaves its adapter in peft's layout, its adapters moved from their start and its loss
(by hand) below the base's; the modes resolve `train.trainable`; mismatched bases are named."""

import numpy as np
import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.train.warm_start import create_from_source
from jaxformer.interop import hf
from jaxformer.models import build_model
from jaxformer.parallel import ParallelPlan
from jaxformer.train import load_run, train
from support.devices import ONE_DEVICE

TEXT = "".join(f"{w} the quick brown fox jumps over the lazy dog {i}\n"
               for i, w in enumerate(["ROMEO:", "JULIET:", "NURSE:"] * 60))
SMALL = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=32",
         "train.seq_len=16", "train.batch_size=4", "train.steps=3", "train.eval_every=3",
         "train.eval_batches=1", "train.log_every=3", "train.checkpoint_every=3",
         "train.sample_tokens=0", "train.progress=false", "optimizer.warmup_steps=0",
         "optimizer.decay_steps=10"]


def flat_params(model) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    (root / "corpus.txt").write_text(TEXT)
    config = load_config(None, SMALL + [f"data.corpus={root / 'corpus.txt'}",
                                        f"train.run_dir={root / 'base'}"])
    train(config)
    return root


def test_lora_run_from_a_base_run(base_run):
    run_dir = base_run / "lora"
    config = load_config(None, SMALL + [f"data.corpus={base_run / 'corpus.txt'}",
                                        f"train.run_dir={run_dir}", "finetune.mode=lora",
                                        f"finetune.base={base_run / 'base'}",
                                        "finetune.lora_targets=[query,value,up]"])
    result = train(config)
    assert result.step == 3
    assert (run_dir / "tokenizer").exists()
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    _, base, _ = load_run(base_run / "base")
    saved, tuned, tokenizer = load_run(run_dir)
    base_params, tuned_params = flat_params(base), flat_params(tuned)
    lora = {p for p in tuned_params if "lora" in p}
    assert len(lora) == 2 * 3 * 2  # a and b of query, value, up in 2 layers
    for path, value in base_params.items():  # the base: exactly the base run's, untouched
        np.testing.assert_array_equal(tuned_params[path], value)
    # The adapters moved: B from zeros (peft's start), A from the run's own initial draw (the
    # state the run starts from, created again from its saved config and seed).
    start = create_from_source(saved, ParallelPlan.from_config(saved.mesh))
    initial = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(start.params)}
    assert set(initial) == lora
    for path in lora:
        if path[-1] == "b":
            assert not initial[path].any()
        assert np.abs(tuned_params[path] - initial[path]).max() > 1e-4, path
    # and the loss fell: next-token cross-entropy, by hand, of the starting model (the base: B is
    # zero) and the tuned one on the first 640 tokens of the corpus the run trained on
    ids = np.asarray(tokenizer.encode(TEXT)[:16 * 40 + 1])
    tokens, targets = ids[:-1].reshape(40, 16), ids[1:].reshape(40, 16)

    def cross_entropy(model):
        logits = np.asarray(model(tokens).logits, np.float64)
        logits -= logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return -np.take_along_axis(log_probs, targets[..., None], -1).mean()

    assert cross_entropy(tuned) < cross_entropy(base) - 1e-3


@pytest.mark.parametrize("mode, trained", [
    ("top_layers", {"layers/1", "final_norm"}),
    ("features", {"final_norm"}),
])
def test_partial_modes_from_a_base_run(base_run, mode, trained):
    run_dir = base_run / mode
    extra = ["finetune.head=[final_norm/*]"] if mode == "features" else []
    config = load_config(None, SMALL + [f"data.corpus={base_run / 'corpus.txt'}",
                                        f"train.run_dir={run_dir}", f"finetune.mode={mode}",
                                        f"finetune.base={base_run / 'base'}"] + extra)
    train(config)
    _, base, _ = load_run(base_run / "base")
    _, tuned, _ = load_run(run_dir)
    changed = {"/".join(map(str, p[:2])) if p[0] == "layers" else p[0]
               for p, v in flat_params(base).items()
               if not np.array_equal(v, flat_params(tuned)[p])}
    assert changed == trained


def test_a_base_from_an_hf_directory(tmp_path):
    overrides = ["model.d_model=32", "model.num_layers=2", "model.num_heads=4",
                 "model.max_seq_len=32", "model.vocab_size=40", "model.vocab_pad_multiple=1",
                 "model.activation=gelu_tanh", "train.seq_len=16"]
    config = load_config(None, overrides)
    source = build_model(config.model, rngs=nnx.Rngs(7))
    hf.save(tmp_path / "hf", config.model, source)
    tuned_config = load_config(None, overrides + ["finetune.mode=lora", "finetune.lora_rank=2",
                                                  f"finetune.base={tmp_path / 'hf'}"])
    state = create_from_source(tuned_config, ParallelPlan.from_config(tuned_config.mesh))
    frozen = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state.frozen)}
    for path, value in flat_params(source).items():
        np.testing.assert_array_equal(frozen[path], value)
    scanned = load_config(None, overrides + ["model.scan_layers=true", f"finetune.base={tmp_path / 'hf'}"])
    state = create_from_source(scanned, ParallelPlan.from_config(scanned.mesh))
    kernel = np.asarray(state.params["layers"]["attention"]["query"]["kernel"].get_value())
    np.testing.assert_array_equal(kernel[1], flat_params(source)[("layers", 1, "attention", "query", "kernel")])
    wrong = load_config(None, [o for o in overrides if "d_model" not in o] +
                        ["model.d_model=64", f"finetune.base={tmp_path / 'hf'}"])
    with pytest.raises(ConfigError, match=r"model.d_model=32 \(run: 64\)"):
        create_from_source(wrong, ParallelPlan.from_config(wrong.mesh))
    # the HF import spells the feed-forward width out (mlp_dim=128); the run's None means the
    # same 4 x d_model, but an explicit other width is a different model
    narrow = load_config(None, overrides + ["model.mlp_dim=64", f"finetune.base={tmp_path / 'hf'}"])
    with pytest.raises(ConfigError, match=r"model.mlp_dim=128 \(run: 64\)"):
        create_from_source(narrow, ParallelPlan.from_config(narrow.mesh))


def test_modes_resolve_train_trainable():
    def trainable(*extra):
        return load_config(None, ["model.num_layers=4"] + list(extra)).train.trainable

    assert trainable() == ["Param"]
    assert trainable("finetune.mode=lora") == ["LoRAParam"]
    assert trainable("finetune.mode=soft_prompt") == ["SoftPromptParam"]
    assert trainable("finetune.mode=top_layers", "finetune.top_layers=2")[:3] == [
        "layers/2/*", "layers/3/*", "final_norm/*"]
    # a config that names its own selection keeps it
    assert trainable("finetune.mode=lora", "train.trainable=[LoRAParam,lm_head/*]") == [
        "LoRAParam", "lm_head/*"]
    with pytest.raises(ConfigError, match="finetune.mode='adapters' is not one of"):
        trainable("finetune.mode=adapters")
    with pytest.raises(ConfigError, match="finetune.top_layers=5 exceeds model.num_layers=4"):
        trainable("finetune.mode=top_layers", "finetune.top_layers=5")
    with pytest.raises(ConfigError, match="quantize_base=nf4 freezes the base"):
        trainable("finetune.quantize_base=nf4")
    with pytest.raises(ConfigError, match="neither a jaxformer run directory"):
        create_from_source(load_config(None, ["finetune.base=/nonexistent"]), None)
