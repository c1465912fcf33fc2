"""`jaxformer compile`: the library's programs compiled for TPU slices on this CPU host.

libtpu's compile-only devices stand in for the chips; the references are independent of the
report's own code: the compiled program's `memory_analysis()`, plain regular-expression counts
over its HLO text, Cloud TPU's published slice shapes, a hand count of weights and AdamW moments,
and XLA's own roofline (`optimal_seconds`) on a single matrix product.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer.cli import main
from jaxformer.commands.compile import compile_report, load_run_config
from jaxformer.compile.analysis import analyse
from jaxformer.compile.plan import plan as plan_candidates
from jaxformer.compile.programs import compile_program
from jaxformer.compile.report import build_report
from jaxformer.compile.topology import CHIPS, GiB, compile_only_devices, parse_topology
from jaxformer.errors import UserError
from jaxformer.models import build_model
from jaxformer.models.costs import count_params
from jaxformer.nn.context import BlockContext
from jaxformer.parallel import ParallelPlan
from jaxformer.presets import load_model_config

TINY = ["mesh.data=1", "mesh.fsdp=4", "train.batch_size=8", "train.seq_len=128",
        "model.attention_impl=auto"]


def plain_count(text: str, opcode: str) -> int:
    """Instructions of `opcode` (or its async -start form) in an HLO text, by a bare regex."""
    return sum(1 for line in text.splitlines() if re.search(rf"\s{opcode}(?:-start)?\(", line))


@pytest.fixture(scope="module")
def tiny_train():
    config = load_run_config("tiny-gpt2", TINY, 1)
    topology = parse_topology("v5e-4")
    plan = ParallelPlan.from_config(config.mesh, devices=compile_only_devices(topology))
    program = compile_program("train", config, plan)
    return config, topology, plan, program


@pytest.mark.parametrize("name, chips, shape", [
    ("v5e-1", 1, (1, 1)), ("v5e-8", 8, (2, 4)), ("v5e-256", 256, (16, 16)),
    ("v6e-8", 8, (2, 4)), ("v5p-8", 4, (2, 2, 1)), ("v5p-128", 64, (4, 4, 4)),
    ("v5p-256", 128, (4, 4, 8)), ("v4-8", 4, (2, 2, 1)), ("v5e:2x2", 4, (2, 2))])
def test_cloud_tpu_names_give_the_published_slice_shapes(name, chips, shape):
    topology = parse_topology(name)
    assert (topology.chips, topology.shape) == (chips, shape)


def test_unknown_topology_names_are_refused_with_the_names_that_work():
    with pytest.raises(UserError, match="v5e-256"):
        parse_topology("v9-8")
    with pytest.raises(UserError, match="two per chip"):
        parse_topology("v5p-7")


def test_compile_only_devices_are_the_named_chips():
    devices = compile_only_devices(parse_topology("v6e-4"))
    assert len(devices) == 4
    assert {d.platform for d in devices} == {"tpu"}
    assert {d.device_kind for d in devices} == {"TPU v6 lite"}


def test_splash_runs_on_a_sharded_tpu_mesh(tiny_train):
    """auto picks splash because the mesh is a TPU's (the host is a CPU), and the kernel lowers on
    4 chips because it runs inside shard_map: in each of 2 layers the forward kernel, its
    recomputation for the backward pass (remat auto is keep_weights on a TPU), dq and dkv."""
    _, _, _, program = tiny_train
    text = program.compiled.as_text()
    assert len(re.findall(r'custom_call_target="tpu_custom_call"', text)) == 8
    assert len(re.findall(r"splash_mqa_fwd", text)) >= 2


def test_report_numbers_are_those_of_the_compiled_program(tiny_train):
    config, topology, plan, program = tiny_train
    report = build_report(program, topology, plan.mesh)
    memory = program.compiled.memory_analysis()
    m = report["memory_bytes_per_chip"]
    assert m["temporaries"] == memory.temp_size_in_bytes
    assert m["outputs"] == memory.output_size_in_bytes
    assert m["aliased"] == memory.alias_size_in_bytes
    assert m["total"] == (memory.argument_size_in_bytes + memory.output_size_in_bytes
                          - memory.alias_size_in_bytes + memory.temp_size_in_bytes
                          + memory.generated_code_size_in_bytes)
    text = program.compiled.as_text()
    for kind in ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute"):
        assert report["collectives"][kind]["count"] == plain_count(text, kind), kind
    assert report["mosaic_kernels"] == text.count('custom_call_target="tpu_custom_call"')
    assert report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert report["fits"] and report["chips"] == 4


def test_fsdp_gathers_each_weight_at_most_a_few_times(tiny_train):
    """FSDP: every weight matrix is gathered where it is used (forward, and again for the backward
    where XLA does not keep it), the token ids are never gathered across the batch axis, and no
    activation travels all-to-all."""
    _, _, _, program = tiny_train
    text = program.compiled.as_text()
    gathers = plain_count(text, "all-gather")
    weights = 2 * 6 + 1 + 1  # 6 matrices a layer, the token and position tables
    assert gathers <= 3 * weights
    assert plain_count(text, "all-to-all") == 0
    assert not re.search(r"= s32\[[^\]]*\]\S* all-gather(?:-start)?\(", text)  # no token ids gathered


def test_the_command_writes_the_json_keys_and_agrees_with_the_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["compile", "tiny-gpt2", "--topology", "v5e-4", "--json", str(out), *TINY]) == 0
    report = json.loads(out.read_text())
    for key in ("topology", "chips", "mesh", "fits", "hbm_bytes_per_chip", "memory_bytes_per_chip",
                "model_flops_per_chip", "compiler_flops_per_chip", "collectives",
                "mosaic_kernels", "attention_impl", "estimate"):
        assert key in report
    assert set(report["memory_bytes_per_chip"]) >= {"parameters", "optimizer", "temporaries",
                                                   "outputs", "aliased", "total"}
    assert set(report["estimate"]) >= {"source", "step_seconds", "tokens_per_second_per_chip", "mfu"}
    assert report["attention_impl"] == "splash" and report["mosaic_kernels"] == 8
    assert report["hbm_bytes_per_chip"] == 16 * GiB
    printed = capsys.readouterr().out
    assert "temporaries" in printed and "all-gather" in printed


def test_a_program_that_does_not_fit_exits_1_with_what_to_try(capsys):
    # ~1.6 billion parameters: 19 GB of float32 weights and AdamW moments on one 16 GiB chip,
    # refused before compiling.
    overrides = ["model.d_model=8192", "model.num_heads=64", "train.batch_size=1",
                 "train.seq_len=128"]
    report = compile_report(load_run_config("tiny-gpt2", overrides, 1), "v5e-1")
    n = count_params(load_run_config("tiny-gpt2", overrides, 1).model)
    assert not report["fits"] and "alone need" in report["compiler_message"]
    assert report["memory_bytes_per_chip"]["total"] == pytest.approx(3 * 4 * n, rel=1e-2)
    code = main(["compile", "tiny-gpt2", "--topology", "v5e-1", *overrides])
    assert code == 1
    assert re.search(r"needs \d+\.\d GiB of 16 GiB per chip: try mesh.fsdp",
                     capsys.readouterr().err)


def test_activations_the_compiler_cannot_place_exit_1_with_what_to_try(capsys):
    # A state of ~0.1 GB, and 64 x 1024 tokens of 2,048-wide activations per layer, none
    # recomputed: the TPU compiler itself refuses the program.
    code = main(["compile", "tiny-gpt2", "--topology", "v5e-1", "model.d_model=2048",
                 "model.num_heads=16", "model.max_seq_len=1024", "train.batch_size=64",
                 "train.seq_len=1024", "model.remat=none"])
    assert code == 1
    assert re.search(r"needs \d+\.\d GiB of 16 GiB per chip: try mesh.fsdp",
                     capsys.readouterr().err)


def test_memory_matches_a_hand_count_of_weights_moments_and_gradients():
    """Parameters, AdamW's two moments and the gradients, 4 bytes each per parameter, on each of
    4 data-parallel chips; shapes that fill the TPU's (8, 128) tiles, few activations (2 x 128
    tokens a chip, every layer recomputed) and 2 layers, so that the buffers XLA adds for
    combining the gradients' all-reduces stay small beside the weights."""
    overrides = ["mesh.data=4", "train.batch_size=8", "train.seq_len=128", "model.d_model=1024",
                 "model.num_heads=8", "model.vocab_size=2048", "model.max_seq_len=128",
                 "model.attention_impl=auto", "model.remat=full"]
    config = load_run_config("tiny-gpt2", overrides, 1)
    report = compile_report(config, "v5e-4")
    n = count_params(config.model) + (config.model.padded_vocab_size - config.model.vocab_size) * 1024
    m = report["memory_bytes_per_chip"]
    assert m["parameters"] == pytest.approx(4 * n, rel=1e-2)
    assert m["optimizer"] == pytest.approx(2 * 4 * n, rel=1e-2)
    measured = m["arguments"] + m["temporaries"] + m["outputs"] - m["aliased"]
    assert measured == pytest.approx(4 * 4 * n, rel=0.05)


def test_the_roofline_agrees_with_xla_on_a_single_matmul_and_counts_one_layer_as_xla_does():
    """One bf16 product of 8192^3 on one v5e chip: XLA's optimal_seconds, the roofline of
    compile/analysis.py and the chip's peak (2 * 8192^3 / 197e12 = 5.58 ms) agree. For one GPT-2
    layer (dense attention, which XLA can see whole) XLA gives no usable optimal_seconds, but its
    FLOPs and bytes are those analysis.py counts."""
    devices = compile_only_devices(parse_topology("v5e-1"))
    mesh = Mesh(np.array(devices), ("x",))
    one = NamedSharding(mesh, PartitionSpec())
    chip = CHIPS["v5e"]
    figures = dict(peak_flops=chip.peak_flops, hbm_bytes_per_s=chip.hbm_bytes_per_s,
                   ici_bytes_per_s=chip.ici_bytes_per_s)
    spec = jax.ShapeDtypeStruct((8192, 8192), jnp.bfloat16, sharding=one)
    compiled = jax.jit(lambda a, b: a @ b).lower(spec, spec).compile()
    costs = analyse(compiled.as_text(), **figures)
    xla = xla_costs(compiled)
    assert costs.flops == 2 * 8192 ** 3
    assert costs.compute_seconds == pytest.approx(xla["optimal_seconds"], rel=0.01)
    assert costs.compute_seconds == pytest.approx(2 * 8192 ** 3 / 197e12, rel=0.01)

    config = load_model_config("gpt2-small", num_layers=1, dtype="bfloat16", attention_impl="xla")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0))))
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one), state)

    def layer(state, tokens):
        model = nnx.merge(graphdef, state)
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        return model.layers[0](model.embed(tokens), BlockContext(positions=positions), None)[0]

    with jax.set_mesh(mesh):
        compiled = jax.jit(layer).lower(state, jax.ShapeDtypeStruct((8, 1024), jnp.int32,
                                                                    sharding=one)).compile()
    costs, xla = analyse(compiled.as_text(), **figures), xla_costs(compiled)
    assert costs.flops == pytest.approx(xla["flops"], rel=0.03)
    assert costs.hbm_bytes == pytest.approx(xla["bytes accessed"], rel=0.15)


def xla_costs(compiled) -> dict:
    costs = compiled.cost_analysis()
    return costs[0] if isinstance(costs, list) else costs


def test_the_decode_loop_compiles_with_its_scan_counted():
    config = load_run_config("tiny-gpt2", TINY, 1)
    report = compile_report(config, "v5e-4", program="generate")
    assert 63 in report["loops"]  # 64 new tokens: the first from prefill, 63 scanned steps
    assert report["estimate"]["source"] == "roofline"  # XLA counts a loop body once
    assert report["compiler_flops_per_chip"] > report["xla_cost_analysis"]["flops"]  # loop counted


def test_a_scanned_model_counts_as_many_flops_as_the_unrolled_one(tiny_train):
    """XLA's cost analysis counts a loop body once; the report multiplies by the trip count, so
    scanning the layers changes nothing it counts."""
    _, topology, plan, program = tiny_train
    unrolled = build_report(program, topology, plan.mesh)
    scanned = compile_report(load_run_config("tiny-gpt2", TINY + ["model.scan_layers=true"], 1), "v5e-4")
    assert 2 in scanned["loops"] and not unrolled["loops"]
    assert scanned["compiler_flops_per_chip"] == pytest.approx(unrolled["compiler_flops_per_chip"], rel=0.02)
    assert scanned["xla_cost_analysis"]["flops"] < 0.8 * unrolled["xla_cost_analysis"]["flops"]
    gathers = scanned["collectives"]["all-gather"]
    assert gathers["executed"] > gathers["count"]


def fake_report(gib: float, ms: float) -> dict:
    return {"fits": gib <= 16, "hbm_bytes_per_chip": 16 * GiB,
            "memory_bytes_per_chip": {"total": gib * GiB},
            "estimate": {"step_seconds": ms / 1e3, "tokens_per_second_per_chip": 1.0, "mfu": 0.5}}


def test_plan_keeps_headroom_and_compiles_every_remat():
    """Reports made by hand, so the choice is checked apart from the compiler: on the FSDP mesh
    `none` uses 15.5 of 16 GiB (fits the chip, not the 10% headroom); the data-parallel mesh's
    `none` is fastest but at 15.9 GiB, and its `full` is faster than its `keep_weights`
    (recomputing more can be faster), so `full` must be compiled too."""
    reports = {("mesh.data=1", "mesh.fsdp=4", "model.remat=none"): fake_report(15.5, 10),
               ("mesh.data=1", "mesh.fsdp=4", "model.remat=keep_weights"): fake_report(12, 12),
               ("mesh.data=4", "mesh.fsdp=1", "model.remat=none"): fake_report(15.9, 8),
               ("mesh.data=4", "mesh.fsdp=1", "model.remat=keep_weights"): fake_report(14.3, 9.5),
               ("mesh.data=4", "mesh.fsdp=1", "model.remat=full"): fake_report(11, 9)}
    compiled = []

    def compile_one(overrides):
        key = tuple(o for o in overrides if o.startswith(("mesh.", "model.remat")))
        compiled.append(key)
        return reports.get(key, fake_report(20, 1))

    load = lambda overrides: load_run_config("tiny-gpt2", overrides, 1)  # noqa: E731
    tried = plan_candidates(["train.batch_size=8"], 4, compile_one, load, say=lambda _: None)
    assert tried[0].overrides[:3] == ["mesh.data=4", "mesh.fsdp=1", "model.remat=full"]
    assert len(compiled) == len(set(compiled)) == 3 * len({k[:2] for k in compiled})
    assert not next(c for c in tried if c.overrides[:3] == ["mesh.data=1", "mesh.fsdp=4",
                                                            "model.remat=none"]).fits
    loose = plan_candidates(["train.batch_size=8"], 4, compile_one, load, say=lambda _: None,
                            headroom=0.0)
    assert loose[0].overrides[:3] == ["mesh.data=4", "mesh.fsdp=1", "model.remat=none"]


def test_plan_compiles_the_candidates_and_picks_the_fastest_that_fits(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", "tiny-gpt2", "--topology", "v5e-4", "--remat", "full", "--json", str(out),
                 "train.batch_size=8", "train.seq_len=128", "model.attention_impl=auto"]) == 0
    plan = json.loads(out.read_text())
    fitting = [c for c in plan["candidates"] if c["fits"]]
    meshes = {tuple(o for o in c["overrides"] if o.startswith("mesh.")) for c in plan["candidates"]}
    assert ("mesh.data=1", "mesh.fsdp=4") in meshes and ("mesh.data=4", "mesh.fsdp=1") in meshes
    assert ("mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2") in meshes
    fastest = min(c["estimate"]["step_seconds"] for c in fitting)
    assert plan["estimate"]["step_seconds"] == fastest
    assert plan["overrides"] == next(c["overrides"] for c in fitting
                                     if c["estimate"]["step_seconds"] == fastest)
    assert "winner: " + " ".join(plan["overrides"]) in capsys.readouterr().out
