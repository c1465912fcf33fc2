"""Cascades of language models on next-token prediction: a query is a context of tokens, an
answer is the model's most likely next token, the cost is the model's forward FLOPs on the
context, and correctness is the corpus's actual next token.

    stages = [Stage("small", small_model), Stage("medium", medium_model), Stage("large", big)]
    probs = [next_token_probs(s.model, contexts) for s in stages]          # validation queries
    policy, outcome = learn(scores, correct, costs, budget)
    answers, stopped, cost = Cascade(stages, policy).run(test_contexts)    # only as far as needed
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.cascade.core import Policy, stop_index
from jaxformer.cascade.scorers import confidence
from jaxformer.models.counting import flops_per_token

CHUNK = 256  # queries per compiled forward (the last chunk is padded to it: one program per model)


def forward_cost(model_config, context: int) -> float:
    """Forward FLOPs of one query of `context` tokens: a third of the training FLOPs per token
    (forward = 2N of 6N, and the attention term likewise), times the tokens."""
    return flops_per_token(model_config, context) / 3.0 * context


@dataclasses.dataclass
class Stage:
    name: str
    model: nnx.Module
    cost: float  # per query, e.g. `forward_cost(config, context)`


_forwards: dict = {}


def _forward(graphdef):
    if graphdef not in _forwards:
        def probs(state, tokens):
            logits = nnx.merge(graphdef, state)(tokens).logits[:, -1]
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        _forwards[graphdef] = jax.jit(probs)
    return _forwards[graphdef]


def next_token_probs(model: nnx.Module, contexts: np.ndarray) -> np.ndarray:
    """contexts [queries, T] int -> the next-token distribution after each [queries, vocab]."""
    graphdef, state = nnx.split(model)
    forward = _forward(graphdef)
    out = []
    for start in range(0, len(contexts), CHUNK):
        chunk = contexts[start:start + CHUNK]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], CHUNK - len(chunk), 0)])
        out.append(np.asarray(forward(state, jnp.asarray(padded, jnp.int32)))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, model.config.vocab_size), np.float32)


def query_windows(stream: np.ndarray, context: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (context [T], next token) pairs from a token stream, without repeats."""
    starts = np.random.default_rng(seed).choice(len(stream) - context, size=count, replace=False)
    contexts = np.stack([stream[s:s + context] for s in starts])
    return contexts.astype(np.int32), stream[starts + context].astype(np.int32)


class Cascade:
    """Stages cheapest first, a policy (which stages, their thresholds) and a scorer over a
    stage's next-token distribution (default: its top probability)."""

    def __init__(self, stages: list[Stage], policy: Policy | None = None,
                 scorer: Callable[[np.ndarray], np.ndarray] | list = confidence):
        self.stages = stages
        self.policy = policy or Policy((len(stages) - 1,), ())  # default: the last model alone
        self.scorers = scorer if isinstance(scorer, list) else [scorer] * len(stages)

    def run(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(answers [queries], stage index that answered [queries], mean cost per query). A
        stage runs only on the queries every earlier stage passed on."""
        queries = len(contexts)
        answers = np.zeros(queries, np.int32)
        stopped = np.full(queries, -1)
        pending = np.arange(queries)
        # Each query's cost, the stages it ran added in order, then the mean: the sums `simulate`
        # forms, so the live cost equals the simulated one to the bit (a total of cost x count per
        # stage rounds differently, and a policy learned at its budget could seem over it).
        spent = np.zeros(queries, np.float64)
        models = self.policy.models
        for position, index in enumerate(models):
            if not len(pending):
                break
            stage = self.stages[index]
            probs = next_token_probs(stage.model, contexts[pending])
            spent[pending] += stage.cost
            last = position == len(models) - 1
            accept = (np.ones(len(pending), bool) if last else
                      self.scorers[index](probs) >= self.policy.thresholds[position])
            answers[pending[accept]] = probs[accept].argmax(-1)
            stopped[pending[accept]] = index
            pending = pending[~accept]
        return answers, stopped, float(spent.mean()) if queries else 0.0


def stage_tables(stages: list[Stage], contexts: np.ndarray, targets: np.ndarray, scorers) -> tuple:
    """(scores [stages, queries], correct [stages, queries], probs per stage) of every stage
    on every query: what `learn` and `simulate` need."""
    probs = [next_token_probs(s.model, contexts) for s in stages]
    scores = np.stack([scorer(p) for scorer, p in zip(scorers, probs)])
    correct = np.stack([p.argmax(-1) == targets for p in probs])
    return scores, correct, probs


__all__ = ["CHUNK", "Cascade", "Stage", "forward_cost", "next_token_probs", "query_windows",
           "stage_tables", "stop_index"]
