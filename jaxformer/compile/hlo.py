"""Reading a compiled XLA program's text: instructions, the computations that call each other, and
how many times each runs per call of the program.

`compiled.cost_analysis()` counts a `while` body once, so a scanned model's FLOPs come out as one
layer's. Here every computation gets a multiplier: the product of the known trip counts of the
loops around it (XLA records them on each `while` as `known_trip_count`), so counts of operations,
FLOPs and bytes are per call of the whole program.
"""

import dataclasses
import math
import re
from collections import defaultdict

DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
               "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
               "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*\(.*\{\s*$")
_CALLS = re.compile(r"\b(calls|to_apply|body|condition)=%?([\w.\-]+)")
_CALL_LISTS = re.compile(r"\b(branch_computations|called_computations)=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of every array in an HLO type (a tuple type lists several)."""
    out = []
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype in DTYPE_BYTES:
            out.append((dtype, tuple(int(d) for d in dims.split(",") if d)))
    return out


def nbytes(type_text: str) -> int:
    return int(sum(DTYPE_BYTES[d] * math.prod(s) for d, s in arrays(type_text)))


@dataclasses.dataclass
class Instruction:
    name: str
    type: str  # the result type as printed
    opcode: str
    operands: list[str]  # operand names
    attrs: str  # everything after the operand list


@dataclasses.dataclass
class Computation:
    name: str
    entry: bool
    fused: bool  # the body of a fusion: its instructions run inside one kernel
    instructions: list[Instruction]

    def types(self) -> dict[str, str]:
        return {i.name: i.type for i in self.instructions}


def _split_type(rest: str) -> tuple[str, str]:
    """'(f32[2], s32[]) all-reduce(...)' -> ('(f32[2], s32[])', 'all-reduce(...)')."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[:i + 1], rest[i + 1:].lstrip()
    head, _, tail = rest.partition(" ")
    return head, tail


def _parse_instruction(line: str) -> Instruction | None:
    text = line.strip()
    if text.startswith("ROOT "):
        text = text[5:]
    name, sep, rest = text.partition(" = ")
    if not sep:
        return None
    type_text, call = _split_type(rest)
    opcode, paren, tail = call.partition("(")
    if not paren:
        return None
    depth, end = 1, len(tail)
    for i, ch in enumerate(tail):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            end = i
            break
    operands = [o.strip().split(" ")[-1].lstrip("%") for o in tail[:end].split(",") if o.strip()]
    return Instruction(name.lstrip("%"), type_text, opcode.strip(), operands, tail[end + 1:])


def parse(text: str) -> dict[str, Computation]:
    computations: dict[str, Computation] = {}
    current = None
    for line in text.splitlines():
        if current is None:
            match = _HEADER.match(line)
            if match:
                name = match[2]
                current = Computation(name, bool(match[1]), name.startswith("fused_computation")
                                      or ".fused" in name, [])
            continue
        if line.strip() == "}":
            computations[current.name] = current
            current = None
            continue
        instruction = _parse_instruction(line)
        if instruction is not None:
            current.instructions.append(instruction)
    return computations


def callees(instruction: Instruction) -> list[tuple[str, str]]:
    """(kind, computation name) of the computations an instruction calls."""
    found = [(kind, name) for kind, name in _CALLS.findall(instruction.attrs)]
    for kind, names in _CALL_LISTS.findall(instruction.attrs):
        found += [(kind, n.strip().lstrip("%")) for n in names.split(",") if n.strip()]
    return found


def _constant(comp: Computation, name: str) -> int | None:
    for ins in comp.instructions:
        if ins.name == name and ins.opcode == "constant" and ins.operands:
            try:
                return int(ins.operands[0])
            except ValueError:
                return None
    return None


def trip_count(loop: Instruction, caller: Computation,
               computations: dict[str, Computation]) -> int | None:
    """A `while` loop's trip count: XLA's `known_trip_count` where it recorded one, else read from
    a condition of the form `counter < N` (or <=, >, >=) with the counter's start value a
    constant in the caller (0 when it cannot be found, as `lax.scan` and `fori_loop` start)."""
    known = _TRIP.search(loop.attrs)
    if known:
        return int(known[1])
    names = dict(callees(loop))
    cond = computations.get(names.get("condition", ""))
    if cond is None or not cond.instructions:
        return None
    compare = next((i for i in reversed(cond.instructions) if i.opcode == "compare"), None)
    if compare is None or len(compare.operands) != 2:
        return None
    direction = re.search(r"direction=(\w+)", compare.attrs)
    direction = direction[1] if direction else "LT"
    values = [_constant(cond, o) for o in compare.operands]
    if (values[0] is None) == (values[1] is None):
        return None
    counter_first = values[1] is not None
    bound = values[1] if counter_first else values[0]
    counter = compare.operands[0] if counter_first else compare.operands[1]
    if not counter_first:  # N > i is i < N
        direction = {"GT": "LT", "GE": "LE", "LT": "GT", "LE": "GE"}.get(direction, direction)
    start = 0
    gte = next((i for i in cond.instructions if i.name == counter and i.opcode == "get-tuple-element"), None)
    index = re.search(r"index=(\d+)", gte.attrs) if gte else None
    init = next((i for i in caller.instructions if i.name == (loop.operands or [""])[0]), None)
    if index and init is not None and init.opcode == "tuple" and int(index[1]) < len(init.operands):
        found = _constant(caller, init.operands[int(index[1])])
        start = found if found is not None else 0
    count = {"LT": bound - start, "LE": bound - start + 1, "GT": start - bound,
             "GE": start - bound + 1}.get(direction)
    return max(count, 0) if count is not None else None


def multipliers(computations: dict[str, Computation]) -> dict[str, float]:
    """How many times each computation runs per call of the entry computation: loop bodies and
    conditions times their trip count (1 where XLA did not record one), the rest as often as
    their callers."""
    calls: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for comp in computations.values():
        for instruction in comp.instructions:
            trip = trip_count(instruction, comp, computations) if instruction.opcode == "while" else None
            for kind, name in callees(instruction):
                times = float(trip) if trip is not None and kind in ("body", "condition") else 1.0
                calls[comp.name].append((name, times))
    result: dict[str, float] = defaultdict(float)
    entry = next((c.name for c in computations.values() if c.entry), None)
    if entry is None:
        return result

    def visit(name: str, times: float, depth: int = 0):
        if depth > 64 or name not in computations:
            return
        result[name] += times
        for callee, factor in calls.get(name, ()):
            visit(callee, times * factor, depth + 1)

    visit(entry, 1.0)
    return result


def loop_trip_counts(computations: dict[str, Computation]) -> list[int]:
    """The trip count of every `while` in the program whose count could be read."""
    counts = [trip_count(i, c, computations) for c in computations.values()
              for i in c.instructions if i.opcode == "while"]
    return [n for n in counts if n is not None]


def kernel_level(computations: dict[str, Computation]) -> set[str]:
    """The computations whose instructions each run as a kernel (or a collective) of their own:
    the entry and what it reaches through loops, conditionals and calls; not the bodies of
    fusions or the scalar functions of reductions, which run inside their caller's kernel."""
    entry = next((c.name for c in computations.values() if c.entry), None)
    found, todo = set(), [entry] if entry else []
    while todo:
        name = todo.pop()
        if name in found or name not in computations:
            continue
        found.add(name)
        for instruction in computations[name].instructions:
            if instruction.opcode in ("while", "conditional", "call"):
                todo += [callee for kind, callee in callees(instruction)
                         if kind in ("body", "condition", "branch_computations", "to_apply", "calls")]
    return found
