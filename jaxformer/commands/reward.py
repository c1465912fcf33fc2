"""`jaxformer reward`: a reward model's scores for pairs of answers, and its pair accuracy.

    jaxformer reward runs/reward_shakespeare_cpu runs/reward_shakespeare_cpu/preferences_val.jsonl

The file holds one {"prompt", "chosen", "rejected"} object a line (`jaxformer.data.preference`),
encoded with the run's tokenizer. Each pair's line prints its two scores; the last line gives
the fraction of pairs whose chosen answer scores higher.
"""

import argparse

import numpy as np

from jaxformer.data.preference import encode_pairs, read_preferences
from jaxformer.errors import UserError
from jaxformer.tasks.reward import score_pairs
from jaxformer.train.run_dir import load_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory of a reward model "
                        "(task.name=reward)")
    parser.add_argument("file", metavar="FILE.jsonl", help="pairs to score, one JSON object "
                        'a line: {"prompt", "chosen", "rejected"}')
    parser.add_argument("--batch-size", type=int, default=32, help="pairs scored at once")
    parser.add_argument("--quiet", action="store_true", help="print the accuracy alone")


def run(args) -> int:
    pairs = read_preferences(args.file)  # checked before the model is loaded
    config, model, tokenizer = load_run(args.run_dir, log=lambda *_: None)
    if getattr(model.config, "head", None) != "reward":
        raise UserError(f"{args.run_dir} holds a {model.config.family} model with head "
                        f"{getattr(model.config, 'head', None)!r}, not a reward model: give the "
                        f"run directory of a task.name=reward run")
    if tokenizer is None:
        raise UserError(f"{args.run_dir} has no tokenizer directory: it cannot encode text")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size {args.batch_size} must be positive")
    rows = encode_pairs(tokenizer, pairs, model.config.max_seq_len, args.file)
    scores = score_pairs(model, rows, args.batch_size)
    if not args.quiet:
        for pair, (chosen, rejected) in zip(pairs, scores):
            mark = "ok" if chosen > rejected else "WRONG"
            print(f"line {pair['line']}: chosen {chosen:+.4f}  rejected {rejected:+.4f}  {mark}  "
                  f"{pair['prompt']!r} -> {pair['chosen']!r} / {pair['rejected']!r}")
    accuracy = float(np.mean(scores[:, 0] > scores[:, 1]))
    print(f"accuracy {accuracy:.4f} over {len(scores)} pairs (chosen scored above rejected)")
    return 0
