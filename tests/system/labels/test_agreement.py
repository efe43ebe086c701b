"""Agreement measures against independent values: Krippendorff's and Fleiss' published examples, scikit-learn's κ,
closed forms and hand counts."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from sklearn.metrics import cohen_kappa_score

from system.labels.agreement import (
    agreement_with_others,
    cohen_kappa,
    fleiss_kappa,
    kappa_with_others,
    krippendorff_alpha_nominal,
)

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


def pairwise_alpha(answers: dict[object, list[object]]) -> float:
    """Krippendorff's α (nominal) by its pairable-values definition, α = 1 − D_o/D_e, without a coincidence matrix:
    D_o averages over units the disagreeing ordered pairs of the unit's m_u values weighted 1/(m_u − 1), divided by
    the n pairable values; D_e is the share of disagreeing ordered pairs among all n values. Units with fewer than
    two values are not pairable."""
    units = [values for values in answers.values() if len(values) >= 2]
    values = [value for unit in units for value in unit]
    n = len(values)
    observed = sum(sum(a != b for a, b in itertools.permutations(unit, 2)) / (len(unit) - 1) for unit in units) / n
    counts = Counter(values)
    expected = sum(counts[a] * counts[b] for a, b in itertools.permutations(counts, 2)) / (n * (n - 1))
    return 1.0 - observed / expected


@pytest.mark.parametrize("seed", range(20))
def test_alpha_equals_the_pairwise_definition_on_random_answers_with_gaps(seed: int) -> None:
    """Random answer matrices (4 to 30 pairs, 2 to 6 people, the four answer kinds, each cell missing with
    probability 0.4, agreement drawn per matrix): the coincidence-matrix α equals the pairwise definition."""
    rng = random.Random(seed)
    people = [f"p{i}" for i in range(rng.randint(2, 6))]
    agree = rng.random()
    answers: dict[int, dict[str, str]] = {}
    for unit in range(rng.randint(4, 30)):
        truth = rng.choice(["1", "2", "tie", "both_bad"])
        answers[unit] = {person: truth if rng.random() < agree else rng.choice(["1", "2", "tie", "both_bad"])
                         for person in people if rng.random() > 0.4}
    reference = pairwise_alpha({unit: list(votes.values()) for unit, votes in answers.items()})
    assert krippendorff_alpha_nominal(answers) == pytest.approx(reference, abs=1e-12)


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


# Fleiss (1971), "Measuring nominal scale agreement among many raters", table 1: 30 patients, 6 psychiatrists each
# (not the same six), diagnoses 1 depression, 2 personality disorder, 3 schizophrenia, 4 neurosis, 5 other.
FLEISS_1971 = [
    "444444", "222555", "233335", "555555", "222444", "113333", "333355", "113334", "114444", "555555",
    "144444", "124444", "222333", "144444", "224445", "333335", "111455", "111112", "224444", "133555",
    "555555", "244444", "224555", "114444", "144445", "222224", "111155", "224444", "133333", "555555",
]


def rated(rows: list[list[int]]) -> dict[int, dict[str, int]]:
    """``{unit: {rater: category}}`` from one row of categories per unit."""
    return {u: {f"r{j}": category for j, category in enumerate(row)} for u, row in enumerate(rows)}


def test_fleiss_kappa_matches_fleiss_1971() -> None:
    rows = [[int(c) for c in row] for row in FLEISS_1971]
    assert [sum(row.count(c) for row in rows) for c in range(1, 6)] == [26, 26, 30, 55, 43]  # the table's totals
    assert fleiss_kappa(rated(rows)) == pytest.approx(0.430, abs=5e-4)  # as published
    assert fleiss_kappa(rated(rows)) == pytest.approx(0.4302445, abs=1e-7)  # R irr::kappam.fleiss on the table


# The worked example of Wikipedia's "Fleiss' kappa" article: 10 subjects, 14 raters, counts per category 1…5.
COUNTS = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
          [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_matches_the_14_rater_example() -> None:
    rows = [[c + 1 for c, n in enumerate(counts) for _ in range(n)] for counts in COUNTS]
    assert fleiss_kappa(rated(rows)) == pytest.approx(0.210, abs=5e-4)


@pytest.mark.parametrize("seed", range(3))
def test_fleiss_kappa_of_two_complete_annotators_is_scotts_pi(seed: int) -> None:
    """With two raters on every unit Fleiss' κ is Scott's π (Fleiss 1971): (p_o − Σ p_c²)/(1 − Σ p_c²) with the
    pooled shares p_c, computed here by hand."""
    rng = random.Random(seed)
    a = [rng.choice([1, 2, 3]) for _ in range(60)]
    b = [x if rng.random() < 0.6 else rng.choice([1, 2, 3]) for x in a]
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / 60
    chance = sum(((a + b).count(c) / 120) ** 2 for c in (1, 2, 3))
    assert fleiss_kappa(rated([[x, y] for x, y in zip(a, b, strict=True)])) == pytest.approx(
        (observed - chance) / (1 - chance), abs=1e-12)


def test_fleiss_kappa_skips_single_answers_and_is_nan_when_undefined() -> None:
    answers = {0: {"a": 1, "b": 1}, 1: {"a": 2, "b": 2}, 2: {"c": 1}}
    assert fleiss_kappa(answers) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa({0: {"a": 1, "b": 1}}))  # one category only
    assert math.isnan(fleiss_kappa({0: {"a": 1}, 1: {"b": 2}}))  # no unit with two answers


def test_fleiss_kappa_with_unequal_answer_counts_uses_each_unit_s_own() -> None:
    """Units of 3 and 2 answers: P_u = Σ n(n−1)/(m(m−1)) per unit, p_c pooled over all 5 answers (by hand)."""
    answers = {0: {"a": 1, "b": 1, "c": 2}, 1: {"a": 2, "b": 2}}
    within = (2 / 6 + 2 / 2) / 2  # unit 0 counts {1: 2, 2: 1}: (2·1 + 1·0)/(3·2); unit 1 {2: 2}: 2·1/(2·1)
    chance = (2 / 5) ** 2 + (3 / 5) ** 2
    assert fleiss_kappa(answers) == pytest.approx((within - chance) / (1 - chance), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_kappa_with_others_is_scikit_learn_s_kappa_against_the_others_majority(seed: int) -> None:
    """Each annotator against the majority of the two others on 3-answer units (two others can tie: those units
    are left out), κ from scikit-learn on the same units."""
    rng = random.Random(seed)
    names = ["a", "b", "c"]
    answers = {u: {name: rng.choice([1, 2]) for name in names} for u in range(80)}
    kappas = kappa_with_others(answers)
    for name in names:
        own, majority = [], []
        for unit in answers.values():
            others = [value for other, value in unit.items() if other != name]
            if others[0] == others[1]:
                own.append(unit[name])
                majority.append(others[0])
        assert kappas[name] == pytest.approx(cohen_kappa_score(own, majority), abs=1e-12)
