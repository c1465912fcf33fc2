"""`jaxformer plan CONFIG --topology NAME`: compile the ways a run could be laid out on a TPU slice
(mesh splits, remat policies, micro-batches), print them fastest first among those that fit, and
give the winner's overrides.

    jaxformer plan gpt2-small --topology v5e-8 train.batch_size=64 train.seq_len=1024 --json plan.json
"""

import argparse
import json
import os
import sys
from pathlib import Path

from jaxformer.commands.compile import compile_report, load_run_config
from jaxformer.compile.plan import HEADROOM, plan, table
from jaxformer.compile.report import format_report
from jaxformer.compile.topology import parse_topology


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a preset name or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="run settings kept in every candidate, e.g. train.batch_size=64")
    parser.add_argument("--topology", required=True, help="TPU slice: v5e-8, v5e-256, v5p-128, ...")
    parser.add_argument("--slices", type=int, default=1, help="slices joined over DCN")
    parser.add_argument("--remat", nargs="+", default=["none", "keep_weights", "full"],
                        choices=["none", "keep_weights", "dots_saveable", "full"],
                        help="remat policies to try (default: none keep_weights full)")
    parser.add_argument("--headroom", type=float, default=HEADROOM,
                        help="share of each chip's HBM a winner must leave free (default 0.1)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the winner's report with its `overrides` and every candidate")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    topology = parse_topology(args.topology, args.slices)
    chips = topology.chips_per_slice
    load = lambda overrides: load_run_config(args.config, overrides, args.slices)  # noqa: E731
    tried = plan(list(args.overrides), chips,
                 lambda overrides: compile_report(load(overrides), args.topology, args.slices),
                 load, say=lambda line: print(line, flush=True), remats=tuple(args.remat),
                 headroom=args.headroom)
    print(table(tried))
    best = tried[0] if tried and tried[0].fits else None
    if args.json:
        payload = dict(best.report) if best else {"fits": False}
        payload["overrides"] = best.overrides if best else None
        payload["candidates"] = [{"overrides": c.overrides, "fits": c.fits, "error": c.error,
                                  "estimate": (c.report or {}).get("estimate"),
                                  "memory_bytes_per_chip": (c.report or {}).get("memory_bytes_per_chip")}
                                 for c in tried]
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if best is None:
        print(f"jaxformer plan: error: no candidate fits with {args.headroom:.0%} of HBM free: lower "
              "train.batch_size, use more chips or a smaller --headroom", file=sys.stderr)
        return 1
    print(format_report(best.report))
    print("winner: " + " ".join(best.overrides))
    return 0
