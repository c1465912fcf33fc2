"""Data, FSDP and tensor parallelism give the same training as one device, and FSDP shards memory.

The reference is the same train step, same init and same batches on a single device; every mesh
must reproduce its losses (float32, 1e-5 relative: only the order of the sums differs).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxformer.config import Config, OptimizerConfig, TrainLoopConfig
from jaxformer.errors import ConfigError
from jaxformer.models.layers import stack_layers
from jaxformer.nn.sharding import constrain
from jaxformer.parallel import (MeshConfig, ParallelPlan, make_mesh, make_rules, resolve_axis_sizes,
                                sharding_context, state_bytes_per_device)
from jaxformer.presets import load_model_config
from jaxformer.tasks import make_task
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import init_train_state, model_graphdef
from jaxformer.train.step import make_train_step

STEPS, BATCH, SEQ = 5, 8, 32


def tiny_config(**model_changes) -> Config:
    # tiny-llama: GQA (2 key/value heads, which tensor=4 cannot split), untied head.
    model = load_model_config("tiny-llama", **model_changes)
    return Config(model=model, optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1, decay_steps=10),
                  train=TrainLoopConfig(batch_size=BATCH, seq_len=SEQ))


def batches(vocab: int, n: int = STEPS, rows: int = BATCH):
    rng = np.random.default_rng(0)
    for _ in range(n):
        # Counting sequences from random starts: learnable, so the loss falls within 5 steps.
        starts = rng.integers(0, vocab, (rows, 1))
        tokens = ((starts + np.arange(SEQ + 1)) % vocab).astype(np.int32)
        yield {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
               "positions": np.broadcast_to(np.arange(SEQ, dtype=np.int32), (rows, SEQ)).copy(),
               "segment_ids": np.ones((rows, SEQ), np.int32),
               "loss_mask": np.ones((rows, SEQ), np.float32)}


def init_fn(config: Config):
    return functools.partial(init_train_state, config, jax.random.PRNGKey(0))


def stacked(state, config: Config):
    """The same initial weights laid out for the scanned model (and its optimizer state)."""
    params = stack_layers(state.params)
    return state.replace(params=params, opt_state=make_optimizer(config.optimizer).init(params))


def train(config: Config, mesh_config: MeshConfig, devices, *, initial=None, scan: bool = False):
    """5 steps from `initial` (a host copy of the state), or from a state created sharded.
    Returns (losses, the initial state on the host, final state, compiled step's memory analysis)."""
    plan = ParallelPlan.from_config(mesh_config, devices)  # as the training loop uses it
    init = init_fn(config)
    if scan:
        initial = stacked(initial, config)
    shardings = plan.shardings((lambda: initial) if initial else init)
    if initial is None:
        state = plan.create(init)  # born sharded
        initial = jax.device_get(state)  # kept before the step donates the buffers
    else:
        state = jax.device_put(initial, shardings)
    model_config = config.model.replace(scan_layers=True, remat="dots_saveable") if scan else config.model
    step = make_train_step(model_graphdef(config.replace(model=model_config)),
                           make_optimizer(config.optimizer), config, make_task(config),
                           state_shardings=shardings)
    losses = []
    for batch in batches(config.model.vocab_size):
        batch = plan.place(batch)
        state, metrics = plan.bind(step)(state, batch)
        losses.append(float(metrics["loss"]))
    with plan.context():
        memory = step.lower(state, batch).compile().memory_analysis()
    # The updated state stays where it was born: sharding is not lost along the way.
    for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    return losses, initial, state, memory


MESHES = {
    "one_device": MeshConfig(data=1),
    "data8": MeshConfig(data=8),
    "fsdp8": MeshConfig(data=1, fsdp=8),
    # tiny-llama's 2 key/value heads cannot be split 4 ways: the rule override replicates them.
    "data2_tensor4": MeshConfig(data=2, tensor=4, rules={"kv_heads": None}),
    # Scanned layers (stacked from the same init) with remat, on all three axes at once.
    "data2_fsdp2_tensor2_scan_remat": MeshConfig(data=2, fsdp=2, tensor=2),
}


@pytest.fixture(scope="module")
def runs():
    cache = {}

    def run(name):
        if name not in cache:
            if name == "one_device":
                cache[name] = train(tiny_config(), MESHES[name], jax.devices()[:1])
            else:
                # fsdp8 creates its state sharded; the others start from the same values, placed.
                initial = None if name == "fsdp8" else run("one_device")[1]
                cache[name] = train(tiny_config(), MESHES[name], jax.devices(), initial=initial,
                                    scan="scan" in name)
        return cache[name]
    return run


@pytest.mark.parametrize("name", [name for name in MESHES if name != "one_device"])
def test_meshes_train_like_one_device(name, runs):
    reference = runs("one_device")[0]
    losses = runs(name)[0]
    assert reference[-1] < reference[0] - 0.5  # it does train
    np.testing.assert_allclose(losses, reference, rtol=1e-5)


def test_fsdp_holds_an_eighth_of_params_and_optimizer_state(runs):
    config = tiny_config()
    total = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(jax.eval_shape(init_fn(config))))
    _, _, state, memory = runs("fsdp8")
    per_device = state_bytes_per_device(state)
    assert len(per_device) == 8
    # Everything but the step counter and the RNG key (a few bytes, replicated) is split 8 ways.
    replicated = sum(leaf.nbytes for leaf in jax.tree.leaves(state) if leaf.size <= 2)
    for nbytes in per_device.values():
        assert total / 8 <= nbytes <= total / 8 + replicated

    # The compiled step agrees: its per-device argument bytes are 1/8 of the one-device step's.
    batch_bytes = sum(v.nbytes for v in next(batches(config.model.vocab_size)).values())
    one_device = runs("one_device")[3]
    assert one_device.argument_size_in_bytes == pytest.approx(total + batch_bytes, rel=0.01)
    assert memory.argument_size_in_bytes == pytest.approx((total + batch_bytes) / 8, rel=0.01)


def test_activations_are_constrained_by_logical_name():
    mesh, rules = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)), make_rules()
    x = jnp.zeros((8, 16, 64))
    assert constrain(x, ("batch", "length", "embed")) is x  # no mesh, no rules: untouched
    with sharding_context(mesh, rules):
        y = jax.jit(lambda x: constrain(x * 2, ("batch", "length", "embed")))(x)
        logits = jax.jit(lambda x: constrain(x * 2, ("batch", "length", "vocab")))(x)
        odd = jax.jit(lambda x: constrain(x * 2, ("batch", "length", "vocab")))(jnp.zeros((2, 3, 5)))
    def spec(*axes):
        return NamedSharding(mesh, PartitionSpec(*axes))
    # batch takes data and fsdp, so embed (whose rule is fsdp) is left whole on activations.
    assert y.sharding.is_equivalent_to(spec(("data", "fsdp"), None, None), 3)
    assert logits.sharding.is_equivalent_to(spec(("data", "fsdp"), None, "tensor"), 3)
    # Sizes that the mesh axes do not divide fall back to fewer axes instead of failing.
    assert odd.sharding.is_equivalent_to(spec("data", None, None), 3)


def test_mesh_sizes_and_config_errors():
    assert resolve_axis_sizes(MeshConfig(), 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    sizes = resolve_axis_sizes(MeshConfig(data=2, fsdp=-1, tensor=2), 8)
    assert sizes == {"data": 2, "fsdp": 2, "tensor": 2}
    # dcn_data multiplies the data axis (2 slices/hosts x 2 data x 2 fsdp).
    sizes = resolve_axis_sizes(MeshConfig(data=-1, fsdp=2, dcn_data=2), 8)
    assert sizes == {"data": 4, "fsdp": 2, "tensor": 1}
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ConfigError, match="set one axis to -1"):
        resolve_axis_sizes(MeshConfig(data=2, fsdp=2), 8)
    with pytest.raises(ConfigError, match="at most one axis"):
        resolve_axis_sizes(MeshConfig(data=-1, fsdp=-1), 8)
    with pytest.raises(ConfigError, match="does not divide"):
        resolve_axis_sizes(MeshConfig(data=-1, tensor=3), 8)
    # num_devices: the mesh is built from the first N devices only.
    mesh = make_mesh(MeshConfig(num_devices=4, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "tensor": 2}
    assert set(mesh.devices.flat) == set(jax.devices()[:4])
    assert make_mesh(MeshConfig(num_devices=1)).devices.size == 1
    for bad in (0, 9, -2):
        with pytest.raises(ConfigError, match=f"mesh.num_devices={bad}: 8 devices are present"):
            make_mesh(MeshConfig(num_devices=bad))
    with pytest.raises(ConfigError, match="did you mean embed"):
        make_rules({"embd": "fsdp"})
    with pytest.raises(ConfigError, match="not a mesh axis"):
        make_rules({"mlp": "model"})
    rules = dict(make_rules({"mlp": None, "embed": ["fsdp", "tensor"]}))
    assert rules["mlp"] is None and rules["embed"] == ("fsdp", "tensor") and rules["heads"] == "tensor"
