"""The compile report: a compiled program's memory, work and estimated speed per chip.

Every number comes from the compiled program: memory from `compiled.memory_analysis()` (the
parameters' and optimizer's shares from the shardings of the program's own inputs), collectives,
kernels, FLOPs and HBM bytes from its HLO (`analysis.py`, loop trip counts included), and the
estimate from XLA's `optimal_seconds` when the program has no loops and XLA gives a positive one,
else from the roofline of `analysis.py` against the chip's published figures.
"""

import json
from pathlib import Path

from jaxformer.compile.analysis import COLLECTIVES, analyse
from jaxformer.compile.programs import Program, shard_bytes
from jaxformer.compile.topology import GiB, Topology
from jaxformer.models.counting import flops_per_token
from jaxformer.nn import attention_kernels


def attention_density(config) -> float:
    """Fraction of the score blocks a causal mask leaves for a splash kernel (128-wide blocks)."""
    model = config.model
    if getattr(model, "family", "") != "decoder" and not getattr(model, "causal", False):
        return 1.0
    blocks = max(1, config.train.seq_len // 128)
    return 0.5 * (1 + 1 / blocks)


def model_flops(program: Program, config) -> float:
    """The model's FLOPs for one call of the program on all chips: 6N + attention per trained
    token (PaLM appendix B, `jaxformer.models.counting`); a third of that (the forward pass) per
    token evaluated or decoded."""
    per_token = flops_per_token(config.model, config.train.seq_len)
    return per_token * program.tokens * (1.0 if program.kind == "train" else 1 / 3)


def attention_used(config, mosaic_kernels: int) -> str:
    """What the model's self-attention ran in a program compiled for TPUs: splash where the
    program holds Mosaic kernels, else `attention_impl` as resolved on a TPU."""
    if mosaic_kernels:
        return "splash"
    model = config.model
    requested = getattr(model, "attention_impl", "xla")
    if requested != "auto":
        return requested
    heads = getattr(model, "num_heads", None) or getattr(getattr(model, "encoder", None), "num_heads", 1)
    case = attention_kernels.Case(
        q_len=config.train.seq_len, heads=heads, kv_heads=getattr(model, "kv_heads", heads),
        head_dim=getattr(model, "head_size", 64), dtype=getattr(model, "dtype", "float32"),
        causal=model.family == "decoder", pattern=getattr(model, "pattern", None),
        segments=bool(config.data.packing), alibi=getattr(model, "position", "") == "alibi",
        backend="tpu")
    choice = attention_kernels.auto_choice(case)[0]
    return choice if choice != "splash" else "chunked (splash cannot run this case)"


def build_report(program: Program, topology: Topology, mesh) -> dict:
    compiled, config = program.compiled, program.config
    chip = topology.chip
    memory = compiled.memory_analysis()
    parameters = shard_bytes(program.parameters)
    optimizer = shard_bytes(program.optimizer) if program.optimizer is not None else 0
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes
             + memory.generated_code_size_in_bytes)
    costs = analyse(compiled.as_text(), peak_flops=chip.peak_flops,
                    hbm_bytes_per_s=chip.hbm_bytes_per_s, ici_bytes_per_s=chip.ici_bytes_per_s,
                    attention_density=attention_density(config))
    chips = topology.chips
    compiler = _compiler_costs(compiled)
    roofline = max(costs.compute_seconds, costs.collective_seconds)
    if not costs.loops and compiler.get("optimal_seconds", 0) > 0:
        source, seconds = "compiler", float(compiler["optimal_seconds"])
    else:
        source, seconds = "roofline", roofline
    model_per_chip = model_flops(program, config) / chips
    tokens_per_s = program.tokens / chips / seconds if seconds > 0 else 0.0
    mfu = model_per_chip / seconds / chip.peak_flops if seconds > 0 else 0.0
    return {
        "topology": topology.name,
        "libtpu_topology": topology.libtpu_name,
        "chip": chip.generation,
        "chips": chips,
        "slices": topology.slices,
        "program": program.kind,
        "mesh": {name: int(size) for name, size in mesh.shape.items()},
        "fits": total <= chip.hbm_bytes,
        "hbm_bytes_per_chip": chip.hbm_bytes,
        "memory_bytes_per_chip": {
            "parameters": parameters, "optimizer": optimizer,
            "arguments": memory.argument_size_in_bytes,
            "temporaries": memory.temp_size_in_bytes, "outputs": memory.output_size_in_bytes,
            "aliased": memory.alias_size_in_bytes, "code": memory.generated_code_size_in_bytes,
            "total": total},
        "model_flops_per_chip": model_per_chip,
        "compiler_flops_per_chip": costs.flops,
        "xla_cost_analysis": compiler,
        "recompute_factor": costs.flops / model_per_chip if model_per_chip else None,
        "hbm_bytes_accessed_per_chip": costs.hbm_bytes,
        "collectives": {kind: {"count": c["count"], "executed": c["executed"], "bytes": c["bytes"]}
                        for kind, c in costs.collectives.items()},
        "mosaic_kernels": costs.mosaic_kernels,
        "loops": costs.loops,
        "attention_impl": attention_used(config, costs.mosaic_kernels),
        "tokens_per_call": program.tokens,
        "estimate": {"source": source, "step_seconds": seconds,
                     "roofline_compute_seconds": costs.compute_seconds,
                     "roofline_collective_seconds": costs.collective_seconds,
                     "tokens_per_second_per_chip": tokens_per_s, "mfu": mfu},
    }


def _compiler_costs(compiled) -> dict:
    try:
        raw = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some programs have none; the report says so
        return {}
    raw = raw[0] if isinstance(raw, list) else raw or {}
    keep = ("flops", "bytes accessed", "optimal_seconds", "transcendentals")
    return {k: float(raw[k]) for k in keep if k in raw}


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def format_report(report: dict) -> str:
    m = report["memory_bytes_per_chip"]
    e = report["estimate"]
    mesh = " x ".join(f"{k}={v}" for k, v in report["mesh"].items())
    lines = [
        f"{report['program']} program for {report['topology']} ({report['chips']} {report['chip']} "
        f"chips, {report['libtpu_topology']}), mesh {mesh}, attention {report['attention_impl']}",
        "memory per chip:",
        f"  parameters   {_gib(m['parameters']):>12}",
        f"  optimizer    {_gib(m['optimizer']):>12}",
        f"  arguments    {_gib(m['arguments']):>12}  (parameters, optimizer, batch)",
        f"  temporaries  {_gib(m['temporaries']):>12}  (activations and workspace)",
        f"  outputs      {_gib(m['outputs']):>12}  aliased with arguments {_gib(m['aliased'])}",
        f"  total        {_gib(m['total']):>12}  of {_gib(report['hbm_bytes_per_chip'])} HBM"
        f"{'' if report['fits'] else '  DOES NOT FIT'}",
        f"FLOPs per chip: model {report['model_flops_per_chip']:.4g}, compiled "
        f"{report['compiler_flops_per_chip']:.4g}"
        + (f" (recompute factor {report['recompute_factor']:.2f})" if report["recompute_factor"] else ""),
        "collectives per call (count in the program / executed with loops / bytes per chip):",
    ]
    for kind in COLLECTIVES:
        c = report["collectives"][kind]
        if c["count"]:
            lines.append(f"  {kind:<19}{c['count']:>6} {c['executed']:>7} {c['bytes'] / 2**20:>12.1f} MiB")
    lines.append(f"Mosaic kernels: {report['mosaic_kernels']}")
    lines.append(f"estimate ({e['source']}): {e['step_seconds'] * 1e3:.3f} ms a call, "
                 f"{e['tokens_per_second_per_chip']:,.0f} tokens/s per chip, MFU {e['mfu']:.1%} "
                 f"(roofline: kernels {e['roofline_compute_seconds'] * 1e3:.3f} ms, collectives "
                 f"{e['roofline_collective_seconds'] * 1e3:.3f} ms)")
    return "\n".join(lines)


def write_json(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
