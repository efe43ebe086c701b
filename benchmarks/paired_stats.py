"""Paired statistics of a strategy benchmark: per-seed differences against a baseline, bootstrap CIs,
one-sided Wilcoxon signed-rank tests and Holm's correction.

Every strategy is run on the same seeds (same prompts, pools, training and evaluation seeds), so the
unit of analysis is the per-seed difference d_s = AUC_strategy(s) − AUC_baseline(s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon


@dataclass(frozen=True)
class Comparison:
    """A strategy against the baseline over paired seeds.

    Attributes:
        mean_diff: mean over seeds of d_s.
        ci95: percentile bootstrap 95% CI of the mean of d_s (seeds resampled with replacement).
        p_value: one-sided Wilcoxon signed-rank test of H1 "d_s tends to be > 0" (zero differences dropped).
        p_holm: ``p_value`` after Holm's step-down correction over all strategies compared.
    """

    mean_diff: float
    ci95: tuple[float, float]
    p_value: float
    p_holm: float = float("nan")


def bootstrap_mean_ci(diffs: Sequence[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean of ``diffs`` [n] (n ≥ 1)."""
    values = np.asarray(diffs, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[draws].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def wilcoxon_greater(diffs: Sequence[float]) -> float:
    """p-value of the one-sided Wilcoxon signed-rank test that ``diffs`` are shifted above 0 (1.0 when every
    difference is 0: nothing to rank)."""
    values = np.asarray(diffs, dtype=np.float64)
    if not np.any(values != 0):
        return 1.0
    return float(wilcoxon(values, alternative="greater").pvalue)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values: sort ascending, p_(i) · (m − i + 1), running maximum, capped at 1."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for rank, (name, p_value) in enumerate(ordered):
        running = max(running, min(1.0, p_value * (len(ordered) - rank)))
        adjusted[name] = running
    return adjusted


def compare(scores: Mapping[str, Sequence[float]], baseline: str) -> dict[str, Comparison]:
    """Every strategy of ``scores`` (name → one number per seed, seeds in the same order) against ``baseline``,
    Holm-corrected over the strategies compared."""
    base = np.asarray(scores[baseline], dtype=np.float64)
    raw = {}
    for name, values in scores.items():
        if name == baseline:
            continue
        diffs = np.asarray(values, dtype=np.float64) - base
        raw[name] = Comparison(float(diffs.mean()), bootstrap_mean_ci(diffs), wilcoxon_greater(diffs))
    adjusted = holm({name: comparison.p_value for name, comparison in raw.items()})
    return {name: Comparison(c.mean_diff, c.ci95, c.p_value, adjusted[name]) for name, c in raw.items()}
