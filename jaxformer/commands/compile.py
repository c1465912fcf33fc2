"""`jaxformer compile CONFIG --topology NAME`: the run's real program compiled for a TPU slice on
this host (no TPU needed), and what it needs per chip.

    jaxformer compile gpt2-small --topology v5e-8 train.batch_size=32 train.seq_len=1024
    jaxformer compile llama-3.1-8b --topology v5e-256 mesh.fsdp=-1 model.remat=full --json out.json

Exit status 1 when the program does not fit the chip's HBM, with what to try.
"""

import argparse
import os
import re
import sys

from jax.experimental import serialize_executable

from jaxformer.compile.programs import StateExceedsChip, compile_program
from jaxformer.compile.report import build_report, format_report, write_json
from jaxformer.compile.topology import GiB, compile_only_devices, parse_topology
from jaxformer.config import load_config
from jaxformer.parallel import ParallelPlan

FIT_HINTS = ("mesh.fsdp=-1 (shard parameters and optimizer state over every chip)",
             "model.remat=full (keep only each layer's input for the backward pass)",
             "a smaller train.batch_size, or optimizer.grad_accum_steps > 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a preset name (gpt2-small, llama-3.1-8b, ...) or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="run settings, e.g. mesh.fsdp=8 train.batch_size=32 model.remat=full")
    parser.add_argument("--topology", required=True,
                        help="TPU slice as Cloud TPU names it: v5e-8, v5e-256, v5p-128, v6e-8, v4-8 "
                             "(or libtpu's v5e:2x2)")
    parser.add_argument("--slices", type=int, default=1,
                        help="slices joined over the data-centre network (multi-slice); sets "
                             "mesh.dcn_data unless given")
    parser.add_argument("--program", default="train", choices=("train", "eval", "generate"),
                        help="the train step (default), the evaluation step, or the decoding loop")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--save", metavar="FILE",
                        help="write the serialized TPU executable (XLA's bytes, for a TPU host "
                             "with the same jax and libtpu)")


def load_run_config(config: str, overrides: list[str], slices: int):
    overrides = list(overrides)
    if slices > 1 and not any(o.startswith("mesh.dcn_data=") for o in overrides):
        overrides.append(f"mesh.dcn_data={slices}")
    return load_config(config, overrides)


def compile_report(config, topology_name: str, slices: int = 1, program: str = "train",
                   save: str | None = None) -> dict:
    """Compile `program` of `config` for the slice and return the report (see compile/report.py)."""
    topology = parse_topology(topology_name, slices)
    devices = compile_only_devices(topology)
    plan = ParallelPlan.from_config(config.mesh, devices=devices)
    # A train state larger than the chip is refused before compiling.
    options = {"hbm_bytes": topology.chip.hbm_bytes} if program == "train" else {}
    try:
        compiled = compile_program(program, config, plan, **options)
    except StateExceedsChip as e:
        return no_fit_report(topology, plan.mesh, program, e.state_bytes, str(e))
    except Exception as e:  # noqa: BLE001 - only the TPU compiler's out-of-memory is a report
        needed = out_of_memory(e)
        if needed is None:
            raise
        return no_fit_report(topology, plan.mesh, program, needed, str(e).splitlines()[0])
    if save:
        payload, _, _ = serialize_executable.serialize(compiled.compiled)
        with open(save, "wb") as f:
            f.write(payload)
    return build_report(compiled, topology, plan.mesh)


_OOM = re.compile(r"RESOURCE_EXHAUSTED: Ran out of memory.*?\(([\d.]+)([KMGT])\) exceeds")


def out_of_memory(error: Exception) -> float | None:
    """Bytes the TPU compiler said a program needs when it refused to compile it for lack of HBM."""
    match = _OOM.search(str(error))
    if match is None:
        return None
    return float(match[1]) * 1024 ** " KMGT".index(match[2])


def no_fit_report(topology, mesh, program: str, needed: float, message: str) -> dict:
    """The report of a program the compiler refused: what it needs, against the chip's HBM."""
    return {"topology": topology.name, "libtpu_topology": topology.libtpu_name,
            "chip": topology.chip.generation, "chips": topology.chips, "slices": topology.slices,
            "program": program, "mesh": {k: int(v) for k, v in mesh.shape.items()}, "fits": False,
            "hbm_bytes_per_chip": topology.chip.hbm_bytes,
            "memory_bytes_per_chip": {"total": needed}, "compiler_message": message}


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; libtpu need not own a TPU
    config = load_run_config(args.config, args.overrides, args.slices)
    report = compile_report(config, args.topology, args.slices, args.program, args.save)
    if "estimate" in report:  # compiled (a refused program has only what it needs)
        print(format_report(report))
    if args.json:
        write_json(report, args.json)
    if not report["fits"]:
        need = report["memory_bytes_per_chip"]["total"] / GiB
        have = report["hbm_bytes_per_chip"] / GiB
        print(f"jaxformer compile: error: needs {need:.1f} GiB of {have:.0f} GiB per chip: try "
              + ", ".join(FIT_HINTS), file=sys.stderr)
        return 1
    return 0
