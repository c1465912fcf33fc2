"""Model cascades (FrugalGPT): cheapest model first, stop at the first answer whose score passes
its threshold; thresholds learned on validation data under a budget on the mean cost.

    from jaxformer.cascade import Cascade, Stage, learn, simulate
"""

from jaxformer.cascade.core import ALWAYS, Outcome, Policy, frontier, learn, simulate, stop_index
from jaxformer.cascade.lm import (Cascade, Stage, forward_cost, next_token_probs, query_windows,
                                  stage_tables)
from jaxformer.cascade.scorers import LogisticScorer, confidence, features

__all__ = ["ALWAYS", "Cascade", "LogisticScorer", "Outcome", "Policy", "Stage", "confidence",
           "features", "forward_cost", "frontier", "learn", "next_token_probs", "query_windows",
           "simulate", "stage_tables", "stop_index"]
