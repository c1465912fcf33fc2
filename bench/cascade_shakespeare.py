"""How much accuracy does a FrugalGPT cascade of three Shakespeare character models keep on
next-character prediction at a fraction of the largest model's cost?

No row in docs/performance.md: the recipe is described in docs/fine-tuning.md, "Cascades".

    python -m bench.cascade_shakespeare [--root runs] [--budgets 0.2 0.4 0.6] [--queries 2000]

Trains (once; the run directories are reused) a tiny model (1 layer, d 32, 600 steps), a small one
(2 layers, d 64, 1,000 steps) and the `shakespeare_char_cpu` recipe (4 layers, d 128, 2,000 steps),
all with the same character tokenizer, then runs `jaxformer cascade` on 2,000 validation and 2,000
test queries (64-character contexts from the validation split) at several budgets, with the
models' own confidence and with the logistic scorer, and draws the cost-accuracy curve. About 3
minutes on 2 cores.
"""

import argparse
import json
from pathlib import Path

from bench.common import machine_line
from jaxformer.cli import main as cli
from jaxformer.config import load_config
from jaxformer.train import train

MODELS = {
    "char_tiny": ["model.num_layers=1", "model.d_model=32", "model.num_heads=2", "train.steps=600",
                  "optimizer.decay_steps=600"],
    "char_small": ["model.num_layers=2", "model.d_model=64", "model.num_heads=4",
                   "train.steps=1000", "optimizer.decay_steps=1000"],
    "shakespeare_char_cpu": [],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.2, 0.4, 0.6])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--plot", type=Path, default=Path("bench/figures/cascade_shakespeare.png"))
    args = parser.parse_args()
    print(machine_line())
    runs = []
    for name, overrides in MODELS.items():
        run = args.root / name
        if not (run / "config.yaml").exists():
            train(load_config("shakespeare_char_cpu", overrides + [
                f"train.run_dir={run}", "train.progress=false", "train.sample_tokens=0"]))
        runs.append(str(run))
    for scorer in ("confidence", "logistic"):
        for budget in args.budgets:
            out = args.root / f"cascade_{scorer}_{budget}.json"
            plot = ["--out", str(args.plot)] if scorer == "confidence" and budget == args.budgets[0] else []
            print(f"\n$ jaxformer cascade {' '.join(runs)} --budget {budget} --scorer {scorer}")
            cli(["cascade", *runs, "--budget", str(budget), "--scorer", scorer,
                 "--queries", str(args.queries), "--json", str(out), *plot])
            figures = json.loads(out.read_text())
            print(f"-> test accuracy {figures['test']['accuracy']:.4f} at cost "
                  f"{figures['test']['cost']:.3f}")


if __name__ == "__main__":
    main()
