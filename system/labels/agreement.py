"""How much annotators agree: Krippendorff's α (nominal), Fleiss' κ, Cohen's κ, and each annotator against the rest.

Answers are a mapping ``{unit: {annotator: value}}`` (a unit is a pair; a value a category such as 1 or 2); an
annotator who did not answer a unit is simply absent from it, which α handles and κ skips.

Krippendorff's α, nominal metric (Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011): over the
units with m_u ≥ 2 values, the coincidence matrix o_ck = Σ_u Σ_{i≠j} [v_ui = c][v_uj = k] / (m_u − 1),
n_c = Σ_k o_ck, n = Σ_c n_c, and

    α = 1 − (n − 1) · Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k,

1 for perfect agreement, 0 for agreement at chance, negative below it; NaN when fewer than two values are
pairable or only one category occurs (no disagreement is possible).

Fleiss' κ (Fleiss, "Measuring nominal scale agreement among many raters", Psychological Bulletin 76(5), 1971)
over the units with n_u ≥ 2 answers, n_uc of them in category c: the agreement within a unit
P_u = Σ_c n_uc (n_uc − 1) / (n_u (n_u − 1)), its mean P̄ over the units, the pooled category shares
p_c = Σ_u n_uc / Σ_u n_u, chance agreement P̄_e = Σ_c p_c², and

    κ = (P̄ − P̄_e) / (1 − P̄_e).

With the same n on every unit (a finished round: k answers a pair) this is Fleiss' statistic exactly; pairs still
short of k answers enter with their own n_u. NaN when no unit has two answers or only one category occurs.

Cohen's κ of two annotators over the units both answered: κ = (p_o − p_e) / (1 − p_e), p_o the share of equal
answers, p_e = Σ_c p_1(c) p_2(c) from each annotator's own category shares.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from typing import TypeVar

Unit = TypeVar("Unit", bound=Hashable)
Value = TypeVar("Value", bound=Hashable)


def krippendorff_alpha_nominal(answers: Mapping[Unit, Mapping[str, Value]]) -> float:
    """Krippendorff's α with the nominal metric (see the module docstring) of ``{unit: {annotator: value}}``; NaN
    when undefined."""
    coincidences: defaultdict[tuple[Value, Value], float] = defaultdict(float)
    for values in (list(unit.values()) for unit in answers.values()):
        if len(values) < 2:
            continue
        weight = 1.0 / (len(values) - 1)
        for first, second in itertools.permutations(values, 2):
            coincidences[first, second] += weight
    totals: defaultdict[Value, float] = defaultdict(float)
    for (first, _), weight in coincidences.items():
        totals[first] += weight
    n = sum(totals.values())
    expected = sum(totals[c] * totals[k] for c, k in itertools.permutations(totals, 2))
    if n <= 1 or expected == 0:
        return math.nan
    observed = sum(weight for (first, second), weight in coincidences.items() if first != second)
    return 1.0 - (n - 1) * observed / expected


def fleiss_kappa(answers: Mapping[Unit, Mapping[str, Value]]) -> float:
    """Fleiss' κ (see the module docstring) of ``{unit: {annotator: value}}``; NaN when undefined."""
    counts = [Counter(unit.values()) for unit in answers.values() if len(unit) >= 2]
    if not counts:
        return math.nan
    within = []
    for unit in counts:
        size = sum(unit.values())
        within.append(sum(n * (n - 1) for n in unit.values()) / (size * (size - 1)))
    pooled: Counter[Value] = sum(counts, Counter())
    answered = sum(pooled.values())
    chance = sum((n / answered) ** 2 for n in pooled.values())
    return math.nan if chance == 1.0 else (statistics.fmean(within) - chance) / (1.0 - chance)


def cohen_kappa(first: Mapping[Unit, Value], second: Mapping[Unit, Value]) -> float:
    """Cohen's κ of two annotators' ``{unit: value}`` over the units both answered; NaN when undefined."""
    shared = [unit for unit in first if unit in second]
    if not shared:
        return math.nan
    observed = sum(first[unit] == second[unit] for unit in shared) / len(shared)
    shares_1, shares_2 = Counter(first[u] for u in shared), Counter(second[u] for u in shared)
    chance = sum(shares_1[c] * shares_2[c] for c in shares_1) / len(shared) ** 2
    return math.nan if chance == 1.0 else (observed - chance) / (1.0 - chance)


def against_others(
    answers: Mapping[Unit, Mapping[str, Value]],
) -> dict[str, tuple[dict[Unit, Value], dict[Unit, Value]]]:
    """``{annotator: (their answers, the others' majority)}``, each ``{unit: value}``, over the units where the
    other annotators of the unit have a strict majority (a tie among them, or nobody else, leaves the unit out);
    annotators with no such unit are left out."""
    pairs: dict[str, tuple[dict[Unit, Value], dict[Unit, Value]]] = {}
    for key, unit in answers.items():
        for annotator, value in unit.items():
            others = Counter(v for name, v in unit.items() if name != annotator).most_common(2)
            if not others or (len(others) == 2 and others[0][1] == others[1][1]):
                continue
            own, majority = pairs.setdefault(annotator, ({}, {}))
            own[key], majority[key] = value, others[0][0]
    return {annotator: pairs[annotator] for annotator in sorted(pairs)}


def agreement_with_others(answers: Mapping[Unit, Mapping[str, Value]]) -> dict[str, float]:
    """``{annotator: share of their answers equal to the majority of the others' answers on the same unit}``, over
    units where the others have a strict majority (:func:`against_others`)."""
    return {annotator: sum(own[key] == majority[key] for key in own) / len(own)
            for annotator, (own, majority) in against_others(answers).items()}


def kappa_with_others(answers: Mapping[Unit, Mapping[str, Value]]) -> dict[str, float]:
    """``{annotator: Cohen's κ of their answers against the others' majority}`` over the same units as
    :func:`agreement_with_others`: the share of agreement corrected for what their and the majority's category
    shares give by chance (NaN when both sides used one and the same category only)."""
    return {annotator: cohen_kappa(own, majority) for annotator, (own, majority) in against_others(answers).items()}
