"""Model cascades (Chen, Zaharia and Zou 2023, "FrugalGPT"): ask the cheapest model first, score
its answer, and stop at the first answer whose score passes that model's threshold; the last
model's answer is always taken. Thresholds (and which models to use) are learned on validation
queries to maximise accuracy under a budget on the mean cost per query.

Everything here is numpy over precomputed per-query arrays, one row per model in cost order:

    scores  [models, queries]   the scorer's confidence in each model's answer
    correct [models, queries]   whether that answer is right (validation / test only)
    costs   [models]            what one query costs on each model (e.g. forward FLOPs)

`simulate` replays a cascade on them; `learn` searches thresholds on validation data; `frontier`
gives the best validation accuracy at each budget (the cost-accuracy curve).
"""

import dataclasses
import itertools

import numpy as np

ALWAYS = -np.inf  # a threshold every score passes


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which models run, in order (indices into the cost-ordered list), and the threshold of
    each but the last (the last model's answer is always accepted)."""

    models: tuple[int, ...]
    thresholds: tuple[float, ...]

    def __post_init__(self):
        if not self.models:
            raise ValueError("a cascade needs at least one model")
        if len(self.thresholds) != len(self.models) - 1:
            raise ValueError(f"{len(self.models)} models need {len(self.models) - 1} thresholds, "
                             f"got {len(self.thresholds)}")


@dataclasses.dataclass(frozen=True)
class Outcome:
    accuracy: float  # mean correctness of the accepted answers
    cost: float  # mean cost per query (every model run until the accepted one)
    stopped_at: np.ndarray  # [queries]: index into policy.models of the accepted answer


def stop_index(policy: Policy, scores: np.ndarray) -> np.ndarray:
    """[queries]: the position in `policy.models` whose answer each query accepts."""
    queries = scores.shape[1]
    stopped = np.full(queries, len(policy.models) - 1)
    undecided = np.ones(queries, bool)
    for position, (model, threshold) in enumerate(zip(policy.models, policy.thresholds)):
        accept = undecided & (scores[model] >= threshold)
        stopped[accept] = position
        undecided &= ~accept
    return stopped


def simulate(policy: Policy, scores: np.ndarray, correct: np.ndarray, costs) -> Outcome:
    """Replay `policy` on per-query scores and correctness."""
    costs = np.asarray(costs, np.float64)
    stopped = stop_index(policy, scores)
    models = np.asarray(policy.models)
    chosen = models[stopped]
    accuracy = correct[chosen, np.arange(scores.shape[1])].mean()
    spent = np.cumsum(costs[models])[stopped]
    return Outcome(float(accuracy), float(spent.mean()), stopped)


def _candidates(values: np.ndarray, count: int) -> np.ndarray:
    """Thresholds worth trying for one model: quantiles of its scores, plus "always accept"."""
    qs = np.unique(np.quantile(values, np.linspace(0.0, 1.0, count)))
    return np.concatenate([[ALWAYS], qs, [np.inf]])


def learn(scores: np.ndarray, correct: np.ndarray, costs, budget: float, *,
          grid: int = 40, max_models: int | None = None) -> tuple[Policy, Outcome]:
    """The policy with the highest validation accuracy whose mean cost per query is at most
    `budget`, over every ordered subset of the models (cheapest first) and a grid of
    thresholds per model (quantiles of its validation scores). Ties go to the cheaper policy.
    ValueError when no policy fits the budget (it is below the cheapest model's cost)."""
    costs = np.asarray(costs, np.float64)
    if np.any(np.diff(costs) < 0):
        raise ValueError("list the models cheapest first (costs must not decrease)")
    if budget < costs.min():
        raise ValueError(f"budget {budget:g} is below the cheapest model's cost {costs.min():g}")
    n = len(costs)
    best: tuple[Policy, Outcome] | None = None
    options = [_candidates(scores[m], grid) for m in range(n)]
    for size in range(1, (max_models or n) + 1):
        for models in itertools.combinations(range(n), size):
            if costs[models[0]] > budget:  # every query pays the first model
                continue
            for thresholds in itertools.product(*(options[m] for m in models[:-1])):
                policy = Policy(models, tuple(float(t) for t in thresholds))
                outcome = simulate(policy, scores, correct, costs)
                if outcome.cost > budget:
                    continue
                if (best is None or outcome.accuracy > best[1].accuracy
                        or (outcome.accuracy == best[1].accuracy and outcome.cost < best[1].cost)):
                    best = (policy, outcome)
    if best is None:
        raise ValueError(f"no cascade keeps the mean cost under {budget:g}")
    return best


def frontier(scores: np.ndarray, correct: np.ndarray, costs, budgets, **kwargs
             ) -> list[tuple[float, Policy, Outcome]]:
    """(budget, best policy, its validation outcome) for each budget the cheapest model fits."""
    costs = np.asarray(costs, np.float64)
    return [(float(b), *learn(scores, correct, costs, float(b), **kwargs))
            for b in budgets if b >= costs.min()]
