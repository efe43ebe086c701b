"""How much annotators agree: Krippendorff's α (nominal), Cohen's κ, and each annotator against the rest.

Answers are a mapping ``{unit: {annotator: value}}`` (a unit is a pair; a value a category such as 1 or 2); an
annotator who did not answer a unit is simply absent from it, which α handles and κ skips.

Krippendorff's α, nominal metric (Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011): over the
units with m_u ≥ 2 values, the coincidence matrix o_ck = Σ_u Σ_{i≠j} [v_ui = c][v_uj = k] / (m_u − 1),
n_c = Σ_k o_ck, n = Σ_c n_c, and

    α = 1 − (n − 1) · Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k,

1 for perfect agreement, 0 for agreement at chance, negative below it; NaN when fewer than two values are
pairable or only one category occurs (no disagreement is possible).

Cohen's κ of two annotators over the units both answered: κ = (p_o − p_e) / (1 − p_e), p_o the share of equal
answers, p_e = Σ_c p_1(c) p_2(c) from each annotator's own category shares.
"""

from __future__ import annotations

import itertools
import math
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


def cohen_kappa(first: Mapping[Unit, Value], second: Mapping[Unit, Value]) -> float:
    """Cohen's κ of two annotators' ``{unit: value}`` over the units both answered; NaN when undefined."""
    shared = [unit for unit in first if unit in second]
    if not shared:
        return math.nan
    observed = sum(first[unit] == second[unit] for unit in shared) / len(shared)
    shares_1, shares_2 = Counter(first[u] for u in shared), Counter(second[u] for u in shared)
    chance = sum(shares_1[c] * shares_2[c] for c in shares_1) / len(shared) ** 2
    return math.nan if chance == 1.0 else (observed - chance) / (1.0 - chance)


def agreement_with_others(answers: Mapping[Unit, Mapping[str, Value]]) -> dict[str, float]:
    """``{annotator: share of their answers equal to the majority of the others' answers on the same unit}``, over
    units where the others have a strict majority; annotators with no such unit are left out."""
    hits: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for unit in answers.values():
        for annotator, value in unit.items():
            others = Counter(v for name, v in unit.items() if name != annotator).most_common(2)
            if not others or (len(others) == 2 and others[0][1] == others[1][1]):
                continue
            seen[annotator] += 1
            hits[annotator] += value == others[0][0]
    return {annotator: hits[annotator] / seen[annotator] for annotator in sorted(seen)}
