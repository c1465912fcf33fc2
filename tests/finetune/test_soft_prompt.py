"""Soft prompts: the forward and the cached decode loop equal the plain model run on the virtual
tokens followed by the text (the prompt vectors placed as extra rows of its embedding table);
training moves the virtual tokens and nothing else; a prompt too long for the context is named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.finetune.soft_prompt import SoftPromptModel
from jaxformer.generate import decode, make_settings
from jaxformer.models import DecoderConfig, build_model
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import create_state, model_graphdef
from jaxformer.train.step import make_train_step
from support.devices import ONE_DEVICE

N = 5


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_decoding_equals_the_forward_with_the_prompt_prepended(position):
    config = DecoderConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, max_seq_len=32,
                           position=position, vocab_pad_multiple=16)
    base = build_model(config, rngs=nnx.Rngs(0))
    model = SoftPromptModel(nnx.clone(base), N, rngs=nnx.Rngs(1))
    assert model.config.max_seq_len == 32 - N
    prompt_vectors = model.model.embed.prompt.get_value()
    # The independent reference: the plain model whose table has N more rows holding the prompt.
    reference = nnx.clone(base)
    table = reference.embed.embedding.get_value()
    reference.embed.embedding.set_value(jnp.concatenate([table, prompt_vectors]))
    virtual = list(range(table.shape[0], table.shape[0] + N))

    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]
    out = decode(model, prompts, make_settings(7, temperature=0.0, return_logits=True))
    for prompt, tokens, logits in zip(prompts, out.tokens, out.logits):
        full = reference(jnp.asarray([virtual + prompt + list(tokens)])).logits[0]
        start = N + len(prompt) - 1
        np.testing.assert_allclose(logits, np.asarray(full[start:start + 7]), atol=2e-5)
        forward = model(jnp.asarray([prompt])).logits[0]
        np.testing.assert_allclose(np.asarray(forward), np.asarray(full[N:N + len(prompt)]), atol=2e-5)


TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=2", "model.num_heads=2", "model.max_seq_len=24",
        "train.seq_len=16", "model.vocab_size=65", "optimizer.warmup_steps=0",
        "optimizer.lr=1e-2", "finetune.mode=soft_prompt", "finetune.soft_prompt_tokens=4"]


def test_only_the_virtual_tokens_train():
    config = load_config(None, TINY)
    assert config.train.trainable == ["SoftPromptParam"]
    state = create_state(config)
    assert [p for p, _ in nnx.to_flat_state(state.params)] == [("model", "embed", "prompt")]
    frozen, prompt = jax.tree.map(np.array, state.frozen), np.array(jax.tree.leaves(state.params)[0])
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config))
    rng = np.random.default_rng(0)
    for _ in range(3):
        tokens = rng.integers(0, 65, (4, 17)).astype(np.int32)
        batch = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
                 "positions": np.tile(np.arange(16, dtype=np.int32), (4, 1)),
                 "segment_ids": np.ones((4, 16), np.int32), "loss_mask": np.ones((4, 16), np.float32)}
        state, _ = step(state, batch)
    for before, after in zip(jax.tree.leaves(frozen), jax.tree.leaves(state.frozen), strict=True):
        np.testing.assert_array_equal(np.asarray(after), before)
    assert np.abs(np.asarray(jax.tree.leaves(state.params)[0]) - prompt).min() > 0


def test_a_prompt_must_fit_the_context():
    with pytest.raises(ConfigError, match=r"train.seq_len=16 plus finetune.soft_prompt_tokens=10.*<=6"):
        load_config(None, TINY + ["finetune.soft_prompt_tokens=10", "model.max_seq_len=16"])
