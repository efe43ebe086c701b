"""Agreement measures against independent values: Krippendorff's published worked example, scikit-learn's κ, and
hand counts."""

from __future__ import annotations

import math
import random

import pytest
from sklearn.metrics import cohen_kappa_score

from system.labels.agreement import agreement_with_others, cohen_kappa, krippendorff_alpha_nominal

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal data: 4 observers, 12 units, gaps.
OBSERVERS = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def units(observers: dict[str, list]) -> dict[int, dict[str, object]]:
    count = len(next(iter(observers.values())))
    return {u: {name: values[u] for name, values in observers.items() if values[u] is not None} for u in range(count)}


def test_alpha_matches_krippendorff_s_worked_example() -> None:
    assert krippendorff_alpha_nominal(units(OBSERVERS)) == pytest.approx(0.743, abs=5e-4)


def test_alpha_is_one_for_perfect_agreement_and_nan_when_undefined() -> None:
    assert krippendorff_alpha_nominal({0: {"a": 1, "b": 1}, 1: {"a": 2, "b": 2}}) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha_nominal({0: {"a": 1, "b": 1}, 1: {"a": 1, "b": 1}}))  # one category
    assert math.isnan(krippendorff_alpha_nominal({0: {"a": 1}, 1: {"b": 2}}))  # nothing pairable


def test_alpha_of_two_complete_annotators_is_near_scotts_pi() -> None:
    """With two annotators and no gaps, α is Scott's π corrected for the sample size: α = π + (1 − π)/(2N) for N
    units (Krippendorff 2011); π computed here from the observed agreement and pooled category shares."""
    rng = random.Random(3)
    a = [rng.choice([1, 2]) for _ in range(40)]
    b = [x if rng.random() < 0.7 else 3 - x for x in a]
    answers = {u: {"a": a[u], "b": b[u]} for u in range(40)}
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / 40
    pooled = [(a + b).count(c) / 80 for c in (1, 2)]
    pi = (observed - sum(p * p for p in pooled)) / (1 - sum(p * p for p in pooled))
    assert krippendorff_alpha_nominal(answers) == pytest.approx(pi + (1 - pi) / 80, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_equals_scikit_learn_on_the_shared_units(seed: int) -> None:
    rng = random.Random(seed)
    first = {u: rng.choice([1, 2]) for u in range(50) if rng.random() < 0.9}
    second = {u: (v if rng.random() < 0.75 else 3 - v) for u, v in first.items() if rng.random() < 0.8}
    second[999] = 1  # a unit only one of them answered is skipped
    shared = [u for u in first if u in second]
    expected = cohen_kappa_score([first[u] for u in shared], [second[u] for u in shared])
    assert cohen_kappa(first, second) == pytest.approx(expected, abs=1e-12)


def test_agreement_with_others_counts_answers_against_the_others_majority() -> None:
    answers = {0: {"a": 1, "b": 1, "c": 2}, 1: {"a": 2, "b": 2, "c": 2}, 2: {"a": 1, "b": 2}}
    # a: unit 0 others {1,2} tie → skipped; unit 1 others 2,2 → hit; unit 2 others {2} → miss  → 1/2
    # b: unit 0 others {1,2} tie → skipped; unit 1 hit; unit 2 others {1} → miss → 1/2
    # c: unit 0 others 1,1 → miss; unit 1 hit → 1/2
    assert agreement_with_others(answers) == {"a": 0.5, "b": 0.5, "c": 0.5}
