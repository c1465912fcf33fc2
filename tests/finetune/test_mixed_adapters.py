"""Several LoRA adapters in one batch: every row of a mixed batch, decoded by the compiled loop,
equals the same prompt decoded with its adapter alone (tokens and every step's logits); id -1
is the base model; adapters of different ranks and layer sets stack; bad ids are named."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxformer.errors import UserError
from jaxformer.finetune import lora as L
from jaxformer.generate import decode, generate, make_settings
from jaxformer.generate.adapters import serve_adapters
from jaxformer.models import DecoderConfig, build_model
from jaxformer.models.layers import stack_layers

CONFIG = DecoderConfig(vocab_size=50, d_model=32, num_layers=2, num_heads=4, max_seq_len=40,
                       vocab_pad_multiple=1)
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8], [9], [10, 11], [12, 13, 14, 15]]
IDS = [2, 0, -1, 1, 2]


def fine_tunes(base):
    """Three adapters: different ranks, layer sets and alphas, with non-zero B."""
    out = []
    for i, (targets, rank) in enumerate([(["query", "value"], 2), (["query", "up", "down"], 4),
                                         (["value", "out"], 3)]):
        model = nnx.clone(base)
        L.attach_lora(model, targets=targets, rank=rank, alpha=2.0 * (i + 1), rngs=nnx.Rngs(i))
        for j, module in enumerate(L.lora_modules(model).values()):
            shape = module.lora.b.get_value().shape
            module.lora.b.set_value(0.5 * jax.random.normal(jax.random.key(10 * i + j), shape))
        out.append(model)
    return out


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_each_row_equals_its_adapter_alone(scan):
    base = build_model(CONFIG, rngs=nnx.Rngs(0))
    tunes = fine_tunes(base)
    server = serve_adapters(base, [L.adapter_weights(m) for m in tunes])
    if scan:  # the same weights in a scanned stack: [layers, adapters, ...] factors
        abstract = nnx.eval_shape(lambda: serve_adapters(
            build_model(CONFIG.replace(scan_layers=True), rngs=nnx.Rngs(0)), _scanned_like(tunes)))
        server = nnx.merge(nnx.graphdef(abstract), stack_layers(nnx.state(server)))
    settings = make_settings(8, temperature=0.0, return_logits=True)
    mixed = decode(server, PROMPTS, settings, adapter_ids=IDS)
    outputs = set()
    for prompt, index, tokens, logits in zip(PROMPTS, IDS, mixed.tokens, mixed.logits):
        alone = decode(base if index < 0 else tunes[index], [prompt], settings)
        np.testing.assert_array_equal(tokens, alone.tokens[0])
        np.testing.assert_allclose(logits, alone.logits[0], atol=2e-5)
        outputs.add(tuple(tokens))
    # The adapters matter: the same prompt under different adapters gives different logits.
    a = decode(server, [PROMPTS[0]] * 4, settings, adapter_ids=[0, 1, 2, -1]).logits
    assert min(np.abs(a[i] - a[j]).max() for i in range(4) for j in range(i)) > 1e-3


def _scanned_like(tunes):
    """Adapter weights of the fine-tunes with each layer's factors stacked as a scanned stack
    holds them ({"layers/attention/query": [L, ...]})."""
    out = []
    for model in tunes:
        weights = L.adapter_weights(model)
        merged = {}
        for path, w in weights.items():
            parts = path.split("/")
            key = "/".join([parts[0]] + parts[2:])
            merged.setdefault(key, []).append((int(parts[1]), w))
        stacked = {}
        for key, items in merged.items():
            items.sort(key=lambda x: x[0])
            ws = [w for _, w in items]
            stacked[key] = L.Adapter(np.stack([w.a for w in ws]), np.stack([w.b for w in ws]),
                                     ws[0].alpha)
        out.append(stacked)
    return out


def test_bad_adapter_ids_are_named():
    base = build_model(CONFIG, rngs=nnx.Rngs(0))
    server = serve_adapters(base, [L.adapter_weights(m) for m in fine_tunes(base)[:2]])
    with pytest.raises(UserError, match="adapter id 2 is out of range"):
        generate(server, [[1, 2]], 3, adapter_ids=[2])
    with pytest.raises(UserError, match="one per prompt"):
        generate(server, [[1, 2], [3]], 3, adapter_ids=[0])
    with pytest.raises(UserError, match="stacks no adapters"):
        generate(base, [[1, 2]], 3, adapter_ids=[0])
    with pytest.raises(ValueError, match="adapter_rows"):
        server(np.ones((1, 3), np.int32))
