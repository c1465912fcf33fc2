"""`jaxformer cascade`: a FrugalGPT cascade of trained language models on next-token prediction.

    jaxformer cascade runs/char_tiny runs/char_small runs/char_cpu --budget 0.4 --out cascade.png

The runs must share a tokenizer. Queries are random windows of the first run's validation split
(the next token is the answer): half to learn the thresholds, half to test them. The budget is the
mean cost per query allowed, as a fraction of the most expensive model's cost (forward FLOPs over
the context). Prints each model alone, the learned cascade on validation and on test (run stage by
stage, each model only on the queries the cheaper ones passed on), and plots the test
cost-accuracy curve of the cascades learned at many budgets against each single model.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from jaxformer.cascade import (Cascade, LogisticScorer, Stage, confidence, forward_cost, learn,
                               query_windows, simulate, stage_tables)
from jaxformer.data import load_corpus
from jaxformer.data.splits import split_stream
from jaxformer.errors import UserError
from jaxformer.train.run_dir import load_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`jaxformer train` run directories")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="mean cost per query, as a fraction of the costliest model's (default 0.5)")
    parser.add_argument("--queries", type=int, default=2000,
                        help="validation queries, and as many test queries (default 2000)")
    parser.add_argument("--context", type=int, default=None,
                        help="tokens of context per query (default: the smallest train.seq_len)")
    parser.add_argument("--scorer", choices=("confidence", "logistic"), default="confidence",
                        help="the model's top probability, or a logistic classifier on its "
                             "distribution fitted on the validation queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="the cost-accuracy plot (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")


def _load(runs):
    loaded = [load_run(run, log=lambda *_: None) for run in runs]
    fingerprints = {tok.fingerprint if tok else None for _, _, tok in loaded}
    if len(fingerprints) != 1 or None in fingerprints:
        raise UserError("the runs of a cascade must share one tokenizer (train them on the same "
                        "corpus and data.tokenizer)")
    return loaded


def run(args: argparse.Namespace) -> int:
    if not 0 < args.budget:
        raise UserError(f"--budget must be positive, got {args.budget}")
    loaded = _load(args.runs)
    context = args.context or min(c.train.seq_len for c, _, _ in loaded)
    for (config, _, _), run_dir in zip(loaded, args.runs):
        if context > config.model.max_seq_len:
            raise UserError(f"--context {context} exceeds {run_dir}'s model.max_seq_len")
    stages = sorted((Stage(Path(r).name, model, forward_cost(config.model, context))
                     for (config, model, _), r in zip(loaded, args.runs)), key=lambda s: s.cost)
    config, _, tokenizer = loaded[0]
    stream = split_stream(config.data, tokenizer, load_corpus(config.data.corpus), "val")
    if len(stream) < 2 * args.queries + context + 1:
        raise UserError(f"the validation split holds {len(stream)} tokens: too few for "
                        f"{2 * args.queries} queries; lower --queries")
    contexts, targets = query_windows(stream, context, 2 * args.queries, args.seed)
    val, test = slice(0, args.queries), slice(args.queries, None)
    _, correct, probs = stage_tables(stages, contexts, targets, [confidence] * len(stages))
    scorers = ([LogisticScorer().fit(p[val], c[val]) for p, c in zip(probs, correct)]
               if args.scorer == "logistic" else [confidence] * len(stages))
    scores = np.stack([s(p) for s, p in zip(scorers, probs)])
    costs = np.asarray([s.cost for s in stages])
    unit = costs.max()
    budget = args.budget * unit
    if budget < costs.min():
        raise UserError(f"--budget {args.budget:g} is below the cheapest model's cost "
                        f"({costs.min() / unit:.3f} of the costliest): raise it")

    print(f"{len(stages)} models, {args.queries} validation + {args.queries} test queries of "
          f"{context} tokens; cost = forward FLOPs per query, relative to {stages[-1].name} "
          f"({unit:.3g} FLOPs)")
    print(f"{'model':<24} {'cost':>6} {'val acc':>8} {'test acc':>8}")
    singles = []
    for i, stage in enumerate(stages):
        singles.append((costs[i] / unit, float(correct[i, val].mean()), float(correct[i, test].mean())))
        print(f"{stage.name:<24} {costs[i] / unit:>6.3f} {singles[-1][1]:>8.4f} {singles[-1][2]:>8.4f}")
    policy, val_out = learn(scores[:, val], correct[:, val], costs, budget)
    test_out = simulate(policy, scores[:, test], correct[:, test], costs)
    answers, _, live_cost = Cascade(stages, policy, scorers).run(contexts[test])
    live_acc = float((answers == targets[test]).mean())
    names = " -> ".join(stages[i].name for i in policy.models)
    thresholds = ", ".join(f"{t:.3f}" for t in policy.thresholds) or "none"
    print(f"cascade under budget {args.budget:g}: {names} (thresholds {thresholds})")
    print(f"  validation: accuracy {val_out.accuracy:.4f}, cost {val_out.cost / unit:.3f}")
    print(f"  test (run stage by stage): accuracy {live_acc:.4f}, cost {live_cost / unit:.3f}")

    budgets = np.linspace(costs.min(), costs.sum(), 25)
    curve = []
    for b in budgets:
        p, _ = learn(scores[:, val], correct[:, val], costs, float(b))
        o = simulate(p, scores[:, test], correct[:, test], costs)
        curve.append((float(b / unit), o.cost / unit, o.accuracy))
    if args.out:
        _plot(args.out, curve, singles, [s.name for s in stages], args.scorer)
        print(f"cost-accuracy plot: {args.out}")
    if args.json:
        args.json.write_text(json.dumps({
            "models": [{"name": s.name, "cost": c, "val_accuracy": v, "test_accuracy": t}
                       for s, (c, v, t) in zip(stages, singles)],
            "budget": args.budget, "policy": {"models": [stages[i].name for i in policy.models],
                                              "thresholds": list(policy.thresholds)},
            "validation": {"accuracy": val_out.accuracy, "cost": val_out.cost / unit},
            "test": {"accuracy": live_acc, "cost": live_cost / unit,
                     "simulated_accuracy": test_out.accuracy,
                     "simulated_cost": test_out.cost / unit},
            "curve": [{"budget": b, "cost": c, "accuracy": a} for b, c, a in curve]}, indent=2))
    return 0


def _plot(path: Path, curve, singles, names, scorer) -> None:
    import matplotlib  # matplotlib is heavy: loaded only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c for _, c, _ in curve], [a for _, _, a in curve], "o-", ms=3,
            label=f"cascade ({scorer} scorer), thresholds learned on validation")
    for (cost, _, acc), name in zip(singles, names):
        ax.scatter([cost], [acc], marker="s", s=40, zorder=3)
        ax.annotate(name, (cost, acc), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xlabel("mean cost per query (relative to the largest model)")
    ax.set_ylabel("test accuracy (next token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
