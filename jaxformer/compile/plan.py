"""Choosing how to run a config on a TPU slice: compile the candidates, keep the fastest that fits.

Candidates cross mesh splits (all FSDP; data parallel over FSDP groups; tensor parallelism where
the heads divide; an expert axis for mixture-of-experts models) with remat policies, and, only
when nothing fits, more gradient-accumulation micro-batches. Each is the real program compiled for
the slice (`programs.py`), judged by its compiled memory and the estimate of `report.py`. Layers
are scanned while planning (one layer body to compile, so a candidate takes seconds to a minute);
the winner's overrides say so.

A candidate fits when its compiled memory leaves `headroom` of the chip's HBM free (10% by
default): the runtime, the input pipeline's buffers and fragmentation need room the compiler does
not count. Every remat policy is compiled for every mesh: recomputing more is not always slower,
since activations kept for the backward pass cost HBM traffic of their own (T5-base on a v5e-8,
data=2 x fsdp=4: an estimated 481 ms a step without remat, where data=8 with keep_weights takes
214 ms).
"""

import dataclasses
import math
from collections.abc import Callable

from jaxformer.errors import UserError

REMATS = ("none", "keep_weights", "full")


HEADROOM = 0.1


@dataclasses.dataclass
class Candidate:
    overrides: list[str]
    report: dict | None = None
    error: str | None = None
    headroom: float = HEADROOM

    @property
    def fits(self) -> bool:
        if not (self.report and self.report.get("fits")):
            return False
        used = self.report["memory_bytes_per_chip"]["total"]
        return used <= (1 - self.headroom) * self.report["hbm_bytes_per_chip"]

    @property
    def step_seconds(self) -> float:
        return self.report["estimate"]["step_seconds"] if self.fits else float("inf")


def _model_sizes(model) -> tuple[int, int, int]:
    """(query heads, key/value heads, experts) of a family's config (towers: the first's)."""
    for part in (model, getattr(model, "decoder", None), getattr(model, "text", None),
                 getattr(model, "encoder", None)):
        if part is not None and getattr(part, "num_heads", None):
            heads = part.num_heads
            kv = getattr(part, "kv_heads", None) or heads
            if hasattr(part, "stack_heads"):  # an encoder-decoder: a split must divide both stacks
                heads = kv = math.gcd(part.stack_heads("encoder"), part.stack_heads("decoder"))
            return heads, kv, getattr(model, "moe_num_experts", 0) or 0
    return 1, 1, 0


def mesh_candidates(chips: int, model, batch_size: int) -> list[dict[str, int]]:
    """Mesh splits worth compiling for `chips` chips of one slice."""
    heads, kv, experts = _model_sizes(model)
    meshes = [{"data": 1, "fsdp": chips}]
    for data in (2, 4, 8, 16):
        if chips % data == 0 and chips // data >= 2 and batch_size % data == 0:
            meshes.append({"data": data, "fsdp": chips // data})
    if batch_size % chips == 0:
        meshes.append({"data": chips, "fsdp": 1})
    for tensor in (2, 4, 8):
        if chips % tensor == 0 and heads % tensor == 0 and (kv % tensor == 0 or tensor % kv == 0):
            meshes.append({"data": 1, "fsdp": chips // tensor, "tensor": tensor})
    for expert in (2, 4, 8):
        if experts and experts % expert == 0 and chips % expert == 0:
            meshes.append({"data": 1, "fsdp": chips // expert, "expert": expert})
    return meshes


def candidates(config, chips: int, accum: tuple[int, ...] = (1,),
               remats: tuple[str, ...] = REMATS) -> list[list[str]]:
    out = []
    for steps in accum:
        for mesh in mesh_candidates(chips, config.model, config.train.batch_size):
            for remat in remats:
                overrides = [f"mesh.{k}={v}" for k, v in mesh.items()]
                overrides += [f"model.remat={remat}", "model.scan_layers=true"]
                if steps > 1:
                    overrides.append(f"optimizer.grad_accum_steps={steps}")
                out.append(overrides)
    return out


def plan(base_overrides: list[str], chips: int, compile_one: Callable[[list[str]], dict],
         load: Callable[[list[str]], object], say: Callable[[str], None] = print,
         remats: tuple[str, ...] = REMATS, headroom: float = HEADROOM) -> list[Candidate]:
    """Compile every candidate (then with 2 and 4 micro-batches if none fits); return them all,
    the fastest that fits first."""
    if not 0 <= headroom < 1:
        raise UserError(f"--headroom {headroom}: give the share of HBM to keep free, in [0, 1)")
    config = load(base_overrides)
    tried: list[Candidate] = []
    for accum in ((1,), (2, 4)):
        for overrides in candidates(config, chips, accum, remats):
            candidate = Candidate(overrides, headroom=headroom)
            try:
                candidate.report = compile_one(base_overrides + overrides)
            except UserError as e:
                candidate.error = str(e)
            say(describe(candidate))
            tried.append(candidate)
        if any(c.fits for c in tried):
            break
    return sorted(tried, key=lambda c: (not c.fits, c.step_seconds))


def describe(candidate: Candidate) -> str:
    settings = " ".join(candidate.overrides)
    if candidate.error:
        return f"{settings}: cannot run ({candidate.error})"
    r = candidate.report
    gib = r["memory_bytes_per_chip"]["total"] / 2**30
    if not candidate.fits:
        return f"{settings}: does not fit ({_need(candidate)})"
    e = r["estimate"]
    return (f"{settings}: {gib:.1f} GiB a chip, {e['step_seconds'] * 1e3:.1f} ms a step, "
            f"{e['tokens_per_second_per_chip']:,.0f} tokens/s a chip, MFU {e['mfu']:.1%}")


def _need(candidate: Candidate) -> str:
    r = candidate.report
    hbm = r["hbm_bytes_per_chip"]
    return (f"{r['memory_bytes_per_chip']['total'] / 2**30:.1f} GiB a chip; at most "
            f"{(1 - candidate.headroom) * hbm / 2**30:.1f} of {hbm / 2**30:.0f} GiB to keep "
            f"{candidate.headroom:.0%} free")


def table(tried: list[Candidate]) -> str:
    rows = ["| rank | overrides | GiB per chip | step ms | tokens/s per chip | MFU |",
            "|---|---|---|---|---|---|"]
    for i, c in enumerate(tried, 1):
        if c.fits:
            e = c.report["estimate"]
            rows.append(f"| {i} | {' '.join(c.overrides)} | "
                        f"{c.report['memory_bytes_per_chip']['total'] / 2**30:.2f} | "
                        f"{e['step_seconds'] * 1e3:.1f} | {e['tokens_per_second_per_chip']:,.0f} | "
                        f"{e['mfu']:.1%} |")
        else:
            why = c.error or f"does not fit ({_need(c)})"
            rows.append(f"| - | {' '.join(c.overrides)} | {why} | | | |")
    return "\n".join(rows)
