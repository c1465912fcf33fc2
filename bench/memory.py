"""How much memory does each preset's training take per device on an 8-device FSDP mesh, with and
without remat, and on which accelerators does it fit?

No row in docs/performance.md: the figures are in docs/scale-out.md, "Memory per device".

    python -m bench.memory [--presets gpt2-small llama-3.1-8b] [--remat none full dots_saveable]

For each preset and remat policy, the real train step (`jaxformer.train.step`) is lowered with
abstract inputs (`jax.ShapeDtypeStruct`s carrying their shardings: no weight is ever allocated)
and compiled for 8 fake CPU devices; XLA's memory analysis of the compiled step then gives, per
device: the sharded parameters + optimizer state (f32), the batch, and the temporaries
(activations kept for the backward pass, gradients, workspace). Compute is bf16, parameters and
AdamW moments float32, layers scanned.

Caveats: the figures come from XLA's CPU compiler. TPU and GPU compilers schedule and fuse
differently (and the CPU one may keep some bf16 work in f32), so read them as estimates to
within tens of percent. Attention is the XLA implementation, which materialises the
[batch, heads, time, time] scores; a flash kernel (cuDNN, Pallas) needs far less.
"""

import os
import sys

# Before JAX starts: the mesh is eight fake CPU devices, whatever accelerator the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from bench.common import machine_line  # noqa: E402
from jaxformer.config import Config, TrainLoopConfig  # noqa: E402
from jaxformer.parallel import (MeshConfig, abstract_state, batch_sharding, make_mesh,  # noqa: E402
                                make_rules, sharding_context)
from jaxformer.presets import load_model_config  # noqa: E402
from jaxformer.tasks import make_task  # noqa: E402
from jaxformer.train.optimizer import make_optimizer  # noqa: E402
from jaxformer.train.state import init_train_state, model_graphdef  # noqa: E402
from jaxformer.train.step import make_train_step  # noqa: E402

GiB = 2 ** 30
# Nominal HBM per chip.
TARGETS = {"v5e-8": 16 * GiB, "v5p-8": 95 * GiB, "8xH100": 80 * GiB}
PRESETS = ["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-3.1-8b"]
SEQ_LEN = {"llama-3.1-8b": 2048}  # others: their context (1024 for GPT-2)


@dataclasses.dataclass
class Row:
    preset: str
    remat: str
    params_opt: int  # bytes per device: parameters + optimizer state (+ step, rng)
    batch: int
    temp: int
    total: int
    compile_s: float


def shard_bytes(abstract) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
    return sum(math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize
               for a in jax.tree.leaves(abstract))


def measure(preset: str, remat: str, batch_per_device: int, mesh) -> Row:
    model = load_model_config(preset, scan_layers=True, remat=remat, dtype="bfloat16",
                              param_dtype="float32")
    seq_len = SEQ_LEN.get(preset, model.max_seq_len)
    batch_size = batch_per_device * mesh.size
    config = Config(model=model, train=TrainLoopConfig(batch_size=batch_size, seq_len=seq_len))
    rules = make_rules()
    state = abstract_state(functools.partial(init_train_state, config, jax.random.PRNGKey(0)), mesh, rules)
    sharding = batch_sharding(mesh, rules, (batch_size, seq_len))
    tokens = jax.ShapeDtypeStruct((batch_size, seq_len), jax.numpy.int32, sharding=sharding)
    batch = {"tokens": tokens, "targets": tokens, "positions": tokens, "segment_ids": tokens,
             "loss_mask": jax.ShapeDtypeStruct((batch_size, seq_len), jax.numpy.float32, sharding=sharding)}
    shardings = jax.tree.map(lambda a: a.sharding, state)
    step = make_train_step(model_graphdef(config), make_optimizer(config.optimizer), config,
                           make_task(config), state_shardings=shardings)
    start = time.perf_counter()
    with sharding_context(mesh, rules):
        compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    # The state is donated: its buffers are reused for the new state (alias), not counted twice.
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
             + memory.temp_size_in_bytes)
    return Row(preset, remat, shard_bytes(state), shard_bytes(batch), memory.temp_size_in_bytes,
               total, compile_s)


def fit(total: int, capacity: int) -> str:
    """yes; tight (over 90%: the runtime and fragmentation need some room); no."""
    return "yes" if total <= 0.9 * capacity else "tight" if total <= capacity else "no"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--remat", nargs="+", default=["none", "full"],
                        choices=["none", "dots_saveable", "full"])
    parser.add_argument("--batch-per-device", type=int, default=1,
                        help="sequences per device per step (global batch = 8x this)")
    args = parser.parse_args(argv)

    mesh = make_mesh(MeshConfig(data=1, fsdp=8))
    print(machine_line())
    print(f"8-device FSDP mesh (fake CPU devices), {args.batch_per_device} sequence(s) per device, "
          f"sequence length {', '.join(f'{k} {v}' for k, v in SEQ_LEN.items())}, else the model's "
          f"context; bf16 compute, f32 params + AdamW state, scanned layers. GiB per device.\n")
    header = (f"{'preset':<14}{'remat':<15}{'params+opt':>11}{'batch':>8}{'temp':>9}{'total':>9}"
              + "".join(f"{name:>9}" for name in TARGETS) + f"{'compile':>9}")
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        for remat in args.remat:
            row = measure(preset, remat, args.batch_per_device, mesh)
            fits = "".join(f"{fit(row.total, cap):>9}" for cap in TARGETS.values())
            print(f"{row.preset:<14}{row.remat:<15}{row.params_opt / GiB:>11.2f}{row.batch / GiB:>8.3f}"
                  f"{row.temp / GiB:>9.2f}{row.total / GiB:>9.2f}{fits}{row.compile_s:>8.0f}s", flush=True)
    capacities = ", ".join(f"{name} {capacity // GiB} GiB" for name, capacity in TARGETS.items())
    print(f"\nfits: total per device vs nominal HBM ({capacities}): yes <= 90%, tight <= 100%.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
