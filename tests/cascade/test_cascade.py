"""Cascades: the replay matches a naive per-query loop; thresholds learned on validation queries
keep the mean cost on fresh test queries within the budget (up to sampling noise) and beat the
single models that fit it; a one-model cascade answers exactly as the model does; a three-stage
cascade run live on the queries it was learned on takes the replay's decisions, so its accuracy
and cost equal the learned ones exactly; the command runs end to end on trained models."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.cascade import (Cascade, LogisticScorer, Policy, Stage, learn, next_token_probs,
                               simulate)
from jaxformer.models import DecoderConfig, build_model
from support.devices import ONE_DEVICE

COSTS = np.asarray([1.0, 4.0, 16.0])


def synthetic(queries, seed):
    """Three models of rising skill: each query has a difficulty; a model answers right when
    its skill beats it, and its confidence is a noisy reading of the margin."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0, 1, queries)
    skill = np.asarray([0.45, 0.65, 0.85])[:, None]
    correct = skill > difficulty + rng.normal(0, 0.05, (3, queries))
    scores = 1 / (1 + np.exp(-8 * (skill - difficulty + rng.normal(0, 0.1, (3, queries)))))
    return scores, correct


def test_replay_matches_a_naive_loop():
    scores, correct = synthetic(300, 0)
    policy = Policy((0, 2), (0.6,))
    outcome = simulate(policy, scores, correct, COSTS)
    right = spent = 0.0
    for q in range(300):
        if scores[0, q] >= 0.6:
            right += correct[0, q]
            spent += COSTS[0]
        else:
            right += correct[2, q]
            spent += COSTS[0] + COSTS[2]
    assert outcome.accuracy == pytest.approx(right / 300)
    assert outcome.cost == pytest.approx(spent / 300)


def test_a_score_equal_to_its_threshold_is_accepted():
    """FrugalGPT's rule: a query stops at the first answer whose score reaches that model's
    threshold, score >= threshold; the last model's answer is always taken."""
    scores = np.array([[0.5, 0.4, 0.7, 0.1], [0.9, 0.9, 0.2, 0.3], [0.0, 0.0, 0.0, 0.0]])
    correct = np.array([[True, False, True, False], [False, True, False, False],
                        [False, False, False, True]])
    outcome = simulate(Policy((0, 1, 2), (0.5, 0.9)), scores, correct, COSTS)
    assert outcome.stopped_at.tolist() == [0, 1, 0, 2]
    assert outcome.accuracy == pytest.approx(4 / 4)
    assert outcome.cost == pytest.approx((1 + 5 + 1 + 21) / 4)


def test_ties_in_accuracy_go_to_the_cheaper_policy():
    """Every model always right: every policy is equally accurate, so the best one is the
    cheapest, the first model alone at its cost, however much more the budget allows."""
    scores, _ = synthetic(200, 3)
    policy, outcome = learn(scores, np.ones((3, 200), bool), COSTS, 25.0, grid=5)
    assert (policy, outcome.accuracy, outcome.cost) == (Policy((0,), ()), 1.0, COSTS[0])


@pytest.mark.parametrize("budget", [3.0, 6.0, 10.0])
def test_learned_thresholds_keep_the_budget_on_test(budget):
    val_scores, val_correct = synthetic(4000, 1)
    test_scores, test_correct = synthetic(4000, 2)
    policy, val = learn(val_scores, val_correct, COSTS, budget, grid=50)
    assert val.cost <= budget
    test = simulate(policy, test_scores, test_correct, COSTS)
    assert test.cost <= budget * 1.05  # the tolerance: sampling noise between query sets
    fitting = [m for m in range(3) if COSTS[m] <= budget]
    best_single = max(test_correct[m].mean() for m in fitting)
    assert test.accuracy > best_single + 0.02  # the point of a cascade
    # the search is exhaustive over its grid (quantiles of the scores): no threshold on the
    # first model of a two-model cascade, tried naively, does better
    for t in np.quantile(val_scores[0], np.linspace(0, 1, 50)):
        for last in (1, 2):
            o = simulate(Policy((0, last), (float(t),)), val_scores, val_correct, COSTS)
            assert o.cost > budget or o.accuracy <= val.accuracy
    with pytest.raises(ValueError, match="below the cheapest"):
        learn(val_scores, val_correct, COSTS, 0.5)


def test_logistic_scorer_ranks_right_answers_higher():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2000, 10))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    correct = rng.uniform(size=2000) < probs.max(-1)  # right as often as the model believes
    scorer = LogisticScorer().fit(probs[:1000], correct[:1000])
    score = scorer(probs[1000:])
    assert score[correct[1000:]].mean() > score[~correct[1000:]].mean() + 0.1


def test_a_cascade_of_one_model_is_that_model():
    config = DecoderConfig(vocab_size=30, d_model=32, num_layers=1, num_heads=2, max_seq_len=16,
                           vocab_pad_multiple=1)
    model = build_model(config, rngs=nnx.Rngs(0))
    contexts = np.random.default_rng(0).integers(0, 30, (300, 12)).astype(np.int32)
    answers, stopped, cost = Cascade([Stage("only", model, 5.0)]).run(contexts)
    want = np.asarray(model(jnp.asarray(contexts)).logits[:, -1].argmax(-1))
    np.testing.assert_array_equal(answers, want)
    assert (stopped == 0).all() and cost == 5.0
    probs = next_token_probs(model, contexts)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def three_stages():
    """Three random decoders of rising size on 300 contexts, their next-token distributions, and
    targets chosen so that a cascade pays: each query's target is the answer of the first model
    (cheapest first) whose confidence is in its top 40%, the largest model's otherwise."""
    from jaxformer.cascade import confidence, forward_cost

    stages = []
    for name, width, layers in (("small", 16, 1), ("medium", 32, 1), ("large", 64, 2)):
        config = DecoderConfig(vocab_size=30, d_model=width, num_layers=layers, num_heads=2,
                               max_seq_len=16, vocab_pad_multiple=1, tie_embeddings=False)
        stages.append(Stage(name, build_model(config, rngs=nnx.Rngs(len(stages))),
                            forward_cost(config, 12) / 1e3))  # kFLOPs: not whole numbers
    contexts = np.random.default_rng(1).integers(0, 30, (300, 12)).astype(np.int32)
    probs = [next_token_probs(s.model, contexts) for s in stages]
    targets = probs[2].argmax(-1)
    for p in probs[1::-1]:
        sure = confidence(p) >= np.quantile(confidence(p), 0.6)
        targets = np.where(sure, p.argmax(-1), targets)
    return stages, contexts, targets


@pytest.mark.parametrize("scorer", ["confidence", "logistic"])
def test_live_cascade_equals_the_simulation_it_was_learned_on(three_stages, scorer):
    """`Cascade.run` on the queries `learn` optimised on takes the same decisions as the replay:
    the same stage answers each query, so accuracy and mean cost are equal exactly (not within a
    tolerance), with costs (kFLOPs) whose sums round."""
    from jaxformer.cascade import confidence, stage_tables

    stages, contexts, targets = three_stages
    _, correct, probs = stage_tables(stages, contexts, targets, [confidence] * 3)
    scorers = ([LogisticScorer().fit(p, c) for p, c in zip(probs, correct)]
               if scorer == "logistic" else [confidence] * 3)
    scores = np.stack([s(p) for s, p in zip(scorers, probs)])
    costs = np.asarray([s.cost for s in stages])
    policy, learned = learn(scores, correct, costs, 0.4 * costs[2])
    assert policy.models == (0, 1, 2)  # a three-stage cascade, thresholds on two models
    answers, stopped, cost = Cascade(stages, policy, scorers).run(contexts)
    np.testing.assert_array_equal(stopped, np.asarray(policy.models)[learned.stopped_at])
    assert len(set(stopped.tolist())) == 3  # every stage answers some queries
    assert float((answers == targets).mean()) == learned.accuracy
    assert cost == learned.cost
    # and both against a per-query loop: pay each stage until one passes its threshold
    spent = right = 0.0
    for q in range(len(contexts)):
        for position, m in enumerate(policy.models):
            spent += costs[m]
            if position == 2 or scores[m, q] >= policy.thresholds[position]:
                right += probs[m][q].argmax() == targets[q]
                break
    assert learned.accuracy == pytest.approx(right / len(contexts), rel=1e-12)
    assert learned.cost == pytest.approx(spent / len(contexts), rel=1e-12)


def test_cascade_command(tmp_path, capsys):
    from jaxformer.cli import main
    from jaxformer.config import load_config
    from jaxformer.train import train

    text = "".join(f"line {i % 7}: the cat sat on the mat and the dog ran off\n" for i in range(400))
    (tmp_path / "c.txt").write_text(text)
    runs = []
    for name, width, steps in [("tiny", 16, 10), ("wide", 48, 40)]:
        run = tmp_path / name
        train(load_config(None, [ONE_DEVICE, f"data.corpus={tmp_path / 'c.txt'}", f"train.run_dir={run}",
                                 f"model.d_model={width}", "model.num_layers=1", "model.num_heads=2",
                                 "model.max_seq_len=16", "train.seq_len=16", "train.batch_size=8",
                                 f"train.steps={steps}", f"train.checkpoint_every={steps}",
                                 "train.eval_batches=0", "train.sample_tokens=0",
                                 "train.progress=false", "optimizer.warmup_steps=0",
                                 "optimizer.lr=3e-3"]))
        runs.append(str(run))
    code = main(["cascade", *runs, "--budget", "0.6", "--queries", "300",
                 "--out", str(tmp_path / "c.png"), "--json", str(tmp_path / "c.json")])
    assert code == 0
    figures = json.loads((tmp_path / "c.json").read_text())
    assert [m["name"] for m in figures["models"]] == ["tiny", "wide"]
    assert figures["test"]["cost"] <= 0.6 * 1.1
    # run stage by stage, the test queries get the decisions the replay on them takes
    assert figures["test"]["accuracy"] == figures["test"]["simulated_accuracy"]
    assert figures["test"]["cost"] == figures["test"]["simulated_cost"]
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["cascade", *runs, "--budget", "0.01", "--queries", "300"]) == 2
    assert "below the cheapest model's cost" in capsys.readouterr().err
