"""The one aggregation step: majority and Dawid–Skene aggregates of answers, and the TRL rows they train as."""

from __future__ import annotations

import random

import pytest

from system.labels.aggregate import aggregate, dawid_skene, majority, preference_rows


@pytest.mark.parametrize(("answers", "choice", "prob_1", "agreement"), [
    (["1", "1", "2"], "1", 2 / 3, 2 / 3),
    (["2", "tie", "2"], "2", 0.5 / 3, 2 / 3),  # a tie answer counts ½ for response 1
    (["1", "2", "tie"], "tie", 0.5, 1 / 3),  # (1 + 0 + ½) / 3 = ½
    (["both_bad", "both_bad", "1"], "both_bad", 0.5, 2 / 3),  # most say both bad
    (["both_bad", "1", "2"], "tie", 0.5, 1 / 3),  # a minority's both-bad leaves the mean of the others
    (["both_bad", "1", "1"], "1", 1.0, 2 / 3),
    (["tie"], "tie", 0.5, 1.0),
])
def test_majority_by_hand(answers: list[str], choice: str, prob_1: float, agreement: float) -> None:
    result = majority(answers)
    assert (result.choice, result.prob_1, result.agreement, result.answers) == (
        choice, pytest.approx(prob_1), pytest.approx(agreement), len(answers))


def simulate(accuracies: dict[str, float], pairs: int, per_pair: int, seed: int
             ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Truth (1 with probability 0.6) and answers: each pair answered by ``per_pair`` annotators drawn at random, each
    answering the truth with their accuracy and the other response otherwise."""
    rng = random.Random(seed)
    truth = {f"u{i}": "1" if rng.random() < 0.6 else "2" for i in range(pairs)}
    answers: dict[str, dict[str, str]] = {}
    for unit, true in truth.items():
        answers[unit] = {name: true if rng.random() < accuracies[name] else ("2" if true == "1" else "1")
                         for name in rng.sample(sorted(accuracies), per_pair)}
    return truth, answers


def test_dawid_skene_recovers_the_annotators_accuracies_of_a_simulation() -> None:
    """The independent check is the simulation's truth: each annotator's share of answers equal to it. EM, which
    never sees the truth, estimates Σ_c p_c π_j[c, c] within 0.05 of it for reliable and unreliable annotators alike
    (a fair estimate needs no more: 400 pairs × 3 answers, ~240 answers each, sd of a share ≈ 0.03)."""
    accuracies = {"ace": 0.95, "bea": 0.9, "cal": 0.8, "dot": 0.7, "eve": 0.55}
    truth, answers = simulate(accuracies, pairs=400, per_pair=3, seed=7)
    model = dawid_skene(answers)
    for name in accuracies:
        theirs = [(unit, votes[name]) for unit, votes in answers.items() if name in votes]
        empirical = sum(answer == truth[unit] for unit, answer in theirs) / len(theirs)
        assert model.accuracy(name) == pytest.approx(empirical, abs=0.05), name
    assert model.priors["1"] == pytest.approx(sum(t == "1" for t in truth.values()) / len(truth), abs=0.05)
    # weighing people by reliability beats counting them: fewer wrong pair labels than the majority's
    units = sorted(answers)
    by_ds = aggregate(answers, units, "dawid_skene")
    by_majority = aggregate(answers, units, "majority")
    wrong_ds = sum(by_ds[u].choice != truth[u] for u in units)
    wrong_majority = sum(by_majority[u].choice != truth[u] for u in units)
    assert wrong_ds < wrong_majority


def test_a_reviewer_s_decision_replaces_the_aggregation() -> None:
    answers = {"p": {"a": "1", "b": "2", "c": "tie"}}
    (result,) = aggregate(answers, ["p"], "majority", {"p": ("2", "rita")}).values()
    assert (result.choice, result.prob_1, result.adjudicated_by, result.answers) == ("2", 0.0, "rita", 3)


@pytest.mark.parametrize(("choice", "prob_1", "policy", "rows"), [
    ("1", 2 / 3, "half", [("x", "y", 2 / 3, "p")]),
    ("2", 1 / 3, "half", [("y", "x", 2 / 3, "p")]),
    ("both_bad", 0.5, "half", []),
    ("tie", 0.5, "drop", []),
    ("tie", 0.5, "half", [("x", "y", 0.5, "p"), ("y", "x", 0.5, None)]),
])
def test_preference_rows(choice: str, prob_1: float, policy: str, rows: list[tuple]) -> None:
    made = preference_rows("p", "q", "x", "y", choice, prob_1, policy)  # type: ignore[arg-type]
    assert [(r.chosen, r.rejected, pytest.approx(r.score_chosen), r.pair_id) for r in made] == rows
    assert all(r.score_rejected == pytest.approx(1 - r.score_chosen) for r in made)
