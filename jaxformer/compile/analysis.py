"""What a compiled program costs per chip, read from the program itself.

- collectives: each kind's instructions in the program (`count`), how many run per call with loop
  trip counts (`executed`), and the bytes they carry per call (the larger of operand and result,
  per chip);
- FLOPs: every dot and convolution (2 x output elements x multiply-adds per element, as XLA's own
  cost analysis counts them), with loop trip counts, plus the Mosaic attention kernels, whose
  matrix products XLA cannot see (counted from their operand shapes);
- HBM bytes: every instruction that runs as its own kernel (fusions count their operands and
  results once, as XLA's cost analysis does), with loop trip counts;
- a roofline: each kernel takes the longer of its FLOPs at the chip's peak and its bytes at the
  chip's HBM bandwidth; collectives take their traffic at the chip's ICI bandwidth and run
  asynchronously beside the compute (the step takes the longer of the two).
"""

import dataclasses
import math
import re

import numpy as np

from jaxformer.compile import hlo

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
# Instructions that move no data of their own: views, tuples, parameters, control flow.
_FREE = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "while", "call",
         "conditional", "after-all", "partition-id", "replica-id", "iota", "opt-barrier",
         "copy-done", "all-gather-done", "all-reduce-done", "collective-permute-done",
         "async-done", "async-update", "send-done", "recv-done", "domain", "add-dependency"}
_GROUP_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")
_GROUP_IOTA = re.compile(r"replica_groups=\[([\d,]+)\]<=")
_GROUP_LIST = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_DIM_LABELS = re.compile(r"dim_labels=([^_]+)_([^-]+)->(\S+?)[,\s]")
_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
# Multiply-adds per (query, key, head_dim) of each splash kernel: forward q.k and p.v; dq
# recomputes q.k and computes do.v and ds.k; dkv recomputes q.k and computes do.v, p.do, ds.q.
_SPLASH_MATMULS = {"fwd": 2, "dq": 3, "dkv": 4}


def collective_kind(opcode: str) -> str | None:
    base = opcode.removesuffix("-start")
    return base if base in COLLECTIVES else None


def group_size(attrs: str) -> int:
    match = _GROUP_MESH.search(attrs)
    if match:
        sizes = dict((k.strip("' "), int(v)) for k, v in
                     (item.split("=") for item in match[1].split(",") if "=" in item))
        axes = [a.strip("' ") for a in match[2].split(",") if a.strip()]
        return math.prod(sizes.get(a, 1) for a in axes)
    match = _GROUP_IOTA.search(attrs)
    if match:
        return int(match[1].split(",")[-1])
    match = _GROUP_LIST.search(attrs)
    if match:
        return len([d for d in match[1].split(",") if d])
    return 2 if "source_target_pairs" in attrs else 1


def traffic(kind: str, moved: int, group: int) -> float:
    """Bytes one chip sends for a collective over `group` chips on a ring (`moved`: the larger of
    operand and result)."""
    if group <= 1:
        return 0.0
    share = (group - 1) / group
    return {"all-reduce": 2 * share * moved, "collective-permute": float(moved)}.get(kind, share * moved)


def _window(attrs: str) -> dict[str, list]:
    match = re.search(r"window=\{([^}]*)\}", attrs)
    fields = dict(item.split("=", 1) for item in match[1].split()) if match else {}

    def ints(key, default, n):
        if key not in fields:
            return [default] * n
        return [int(x) for x in fields[key].split("x")]

    n = len(fields["size"].split("x")) if "size" in fields else 0
    pads = [[int(p) for p in x.split("_")] for x in fields["pad"].split("x")] if "pad" in fields else [[0, 0]] * n
    return {"size": ints("size", 1, n), "stride": ints("stride", 1, n), "pad": pads,
            "lhs_dilate": ints("lhs_dilate", 1, n), "rhs_dilate": ints("rhs_dilate", 1, n)}


def _valid_taps(in_size, out_size, size, stride, pad_lo, lhs_dilate, rhs_dilate) -> int:
    """(output position, window tap) pairs of one spatial dimension that read a real input
    element, not padding or a dilation hole."""
    o = np.arange(out_size)[:, None]
    k = np.arange(size)[None, :]
    p = o * stride + k * rhs_dilate - pad_lo
    ok = (p >= 0) & (p <= (in_size - 1) * lhs_dilate) & (p % lhs_dilate == 0)
    return int(ok.sum())


def conv_flops(instruction: hlo.Instruction, types: dict[str, str]) -> float:
    """2 x multiply-adds of a dot or convolution. A convolution's multiply-adds: output batch x
    output features x input features per group x, along each spatial dimension, the (output,
    tap) pairs that land on real input (XLA's TPU programs write many products as convolutions
    whose padding must not count)."""
    out = hlo.arrays(instruction.type)
    if not out or not instruction.operands:
        return 0.0
    out_shape = out[0][1]
    if instruction.opcode == "dot":
        lhs = hlo.arrays(types.get(instruction.operands[0], ""))
        match = _CONTRACT.search(instruction.attrs)
        if not lhs or not match:
            return 0.0
        dims = [int(d) for d in match[1].split(",") if d]
        return 2.0 * math.prod(out_shape) * math.prod(lhs[0][1][d] for d in dims)
    if len(instruction.operands) < 2:
        return 0.0
    lhs = hlo.arrays(types.get(instruction.operands[0], ""))
    rhs = hlo.arrays(types.get(instruction.operands[1], ""))
    labels = _DIM_LABELS.search(instruction.attrs + " ")
    if not lhs or not rhs or not labels:
        return 0.0
    lhs_labels, rhs_labels, out_labels = labels[1], labels[2], labels[3]
    lhs_shape, rhs_shape = lhs[0][1], rhs[0][1]
    if len(lhs_labels) != len(lhs_shape) or len(out_labels) != len(out_shape) or len(rhs_labels) != len(rhs_shape):
        return 0.0
    window = _window(instruction.attrs)
    macs = out_shape[out_labels.index("b")] * out_shape[out_labels.index("f")] * rhs_shape[rhs_labels.index("i")]
    spatial = sorted(c for c in lhs_labels if c.isdigit())
    for j, digit in enumerate(spatial):
        if j >= len(window["size"]):
            break
        macs *= _valid_taps(lhs_shape[lhs_labels.index(digit)], out_shape[out_labels.index(digit)],
                            window["size"][j], window["stride"][j], window["pad"][j][0],
                            window["lhs_dilate"][j], window["rhs_dilate"][j])
    return 2.0 * macs


def splash_flops(instruction: hlo.Instruction, types: dict[str, str], density: float) -> float:
    """A splash kernel's matrix-product FLOPs, from its operands: the queries [..., t_q, d] (the
    first floating-point operand; its leading axes are the batch, key/value heads and the heads
    of each group, whichever the program kept) against the keys [..., t_k, d] (the second), times
    the fraction of blocks the mask leaves live (`density`)."""
    kind = next((k for k in ("dkv", "dq", "fwd") if f"_{k}" in instruction.name), None)
    if kind is None:
        return 0.0
    floats = [a[0][1] for a in (hlo.arrays(types.get(o, "")) for o in instruction.operands)
              if a and a[0][0] in ("bf16", "f32", "f16") and len(a[0][1]) >= 2]
    if len(floats) < 2:
        return 0.0
    queries, keys = floats[0], floats[1]
    return 2.0 * _SPLASH_MATMULS[kind] * math.prod(queries) * keys[-2] * density


@dataclasses.dataclass
class ProgramCosts:
    collectives: dict  # kind -> {"count", "executed", "bytes", "traffic_bytes"}
    mosaic_kernels: int
    flops: float  # per chip per call
    hbm_bytes: float
    compute_seconds: float  # roofline of the kernels
    collective_seconds: float
    loops: list[int]


def analyse(text: str, *, peak_flops: float, hbm_bytes_per_s: float, ici_bytes_per_s: float,
            attention_density: float = 1.0) -> ProgramCosts:
    computations = hlo.parse(text)
    times = hlo.multipliers(computations)
    collectives = {k: {"count": 0, "executed": 0, "bytes": 0, "traffic_bytes": 0.0}
                   for k in COLLECTIVES}
    kernels, flops, hbm, compute_s = 0, 0.0, 0.0, 0.0

    fused_flops: dict[str, float] = {}

    def inner_flops(name: str) -> float:
        """FLOPs of one run of a fused computation (and what it calls)."""
        if name not in fused_flops:
            comp = computations.get(name)
            total = 0.0
            if comp is not None:
                types = comp.types()
                for ins in comp.instructions:
                    if ins.opcode in ("convolution", "dot"):
                        total += conv_flops(ins, types)
                    total += sum(inner_flops(c) for kind, c in hlo.callees(ins) if kind == "calls")
            fused_flops[name] = total
        return fused_flops[name]

    for comp in computations.values():  # every collective, wherever XLA placed it
        n = times.get(comp.name, 0.0)
        types = comp.types()
        for ins in comp.instructions:
            kind = collective_kind(ins.opcode)
            if kind is not None and n:
                _count(collectives[kind], ins, types, n)
    for name in hlo.kernel_level(computations):
        comp, n = computations[name], times.get(name, 0.0)
        types = comp.types()
        for ins in comp.instructions:
            if collective_kind(ins.opcode) is not None:
                continue
            if ins.opcode in _FREE or ins.opcode.endswith("-done"):
                continue
            op_flops = 0.0
            if ins.opcode in ("convolution", "dot"):
                op_flops = conv_flops(ins, types)
            elif ins.opcode == "fusion":
                op_flops = sum(inner_flops(c) for k, c in hlo.callees(ins) if k == "calls")
            elif ins.opcode == "custom-call" and "tpu_custom_call" in ins.attrs:
                kernels += 1
                op_flops = splash_flops(ins, types, attention_density)
            moved = kernel_bytes(ins, types, computations)
            flops += n * op_flops
            hbm += n * moved
            compute_s += n * max(op_flops / peak_flops, moved / hbm_bytes_per_s)
    comm_s = sum(c["traffic_bytes"] for c in collectives.values()) / ici_bytes_per_s
    return ProgramCosts(collectives, kernels, flops, hbm, compute_s, comm_s,
                        hlo.loop_trip_counts(computations))


def kernel_bytes(ins: hlo.Instruction, types: dict[str, str],
                 computations: dict[str, hlo.Computation]) -> int:
    """HBM bytes one kernel reads and writes: its operands and result, except that a fused
    `dynamic-slice` of an operand reads only the slice, and a fusion whose result is a
    `dynamic-update-slice` of an operand writes only the update, in place (what a scan over
    layers does to its stacked weights and saved activations)."""
    operand_bytes = [hlo.nbytes(types.get(o, "")) for o in ins.operands]
    result = hlo.nbytes(ins.type)
    fused = next((computations.get(c) for k, c in hlo.callees(ins) if k == "calls"), None)
    if ins.opcode != "fusion" or fused is None or not fused.instructions:
        return result + sum(operand_bytes)
    params = {}
    for i in fused.instructions:
        if i.opcode == "parameter" and i.operands:
            try:
                params[i.name] = int(i.operands[0])
            except ValueError:
                pass
    inner = fused.types()
    for i in fused.instructions:
        if i.opcode == "dynamic-slice" and i.operands and i.operands[0] in params:
            index = params[i.operands[0]]
            if index < len(operand_bytes):
                operand_bytes[index] = min(operand_bytes[index], hlo.nbytes(i.type))
    root = fused.instructions[-1]
    if root.opcode == "dynamic-update-slice" and len(root.operands) > 1 and root.operands[0] in params:
        index = params[root.operands[0]]
        update = hlo.nbytes(inner.get(root.operands[1], ""))
        if index < len(operand_bytes):
            operand_bytes[index] = 0
        result = update
    return result + sum(operand_bytes)


def _moved(ins: hlo.Instruction, types: dict[str, str]) -> int:
    result = max((hlo.DTYPE_BYTES[d] * math.prod(s) for d, s in hlo.arrays(ins.type)), default=0)
    operand = max((hlo.nbytes(types.get(o, "")) for o in ins.operands), default=0)
    return int(max(result, operand))


def _count(entry: dict, ins: hlo.Instruction, types: dict[str, str], times: float) -> None:
    kind = collective_kind(ins.opcode)
    moved = _moved(ins, types)
    entry["count"] += 1
    entry["executed"] += int(times)
    entry["bytes"] += int(times * moved)
    entry["traffic_bytes"] += times * traffic(kind, moved, group_size(ins.attrs))
