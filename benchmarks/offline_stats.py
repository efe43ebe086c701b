"""Labels-saved ratios and seed-bootstrap confidence intervals for the offline benchmark.

Errors are arrays ``[S, B]`` (S seeds, B budgets n_1 < … < n_B), one per strategy, all measured on the
same S pools (paired). A curve is the mean over seeds. Uniform needs n_B labels for its final mean error
e_U(n_B); ADPO+ needs n* labels for the same error, read off its curve by log-log interpolation between
the two budgets around the first crossing. The labels-saved ratio is n_B / n*. Its 95% CI resamples the
S seeds with replacement (the same draw for both strategies, keeping the pairing) and takes the 2.5 and
97.5 percentiles of the ratio over the draws. The same paired draws give the per-budget ratio of two strategies'
mean errors (:func:`ratio_intervals`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval [low, high]."""

    value: float
    low: float
    high: float


def labels_needed(budgets: np.ndarray, errors: np.ndarray, target: float) -> float:
    """Smallest n where the error curve [B] reaches ``target``, interpolated linearly in (log n, log error).

    Returns budgets[0] when the first budget already reaches it (a lower bound) and inf when no budget does.
    """
    for j, error in enumerate(errors):
        if error <= target:
            if j == 0:
                return float(budgets[0])
            slope = (math.log(errors[j]) - math.log(errors[j - 1])) / (math.log(budgets[j]) - math.log(budgets[j - 1]))
            return float(budgets[j - 1] * math.exp((math.log(target) - math.log(errors[j - 1])) / slope))
    return math.inf


def labels_saved(budgets: np.ndarray, uniform: np.ndarray, plus: np.ndarray) -> float:
    """n_B / n*: labels Uniform spends for its final error ÷ labels ADPO+ needs for it (curves [B])."""
    return float(budgets[-1]) / labels_needed(budgets, plus, float(uniform[-1]))


def seed_resamples(num_seeds: int, draws: int, seed: int) -> np.ndarray:
    """[draws, S] seed indices drawn with replacement (one row per bootstrap draw)."""
    return np.random.default_rng(seed).integers(0, num_seeds, size=(draws, num_seeds))


def percentile_interval(value: float, draws: np.ndarray) -> Interval:
    """``value`` with the 2.5 and 97.5 percentiles of its bootstrap ``draws`` [D]."""
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(float(value), float(low), float(high))


def curve_intervals(errors: np.ndarray, resamples: np.ndarray) -> list[Interval]:
    """Per budget: mean over seeds of ``errors`` [S, B] with its bootstrap interval over ``resamples`` [D, S]."""
    means = errors[resamples].mean(axis=1)  # [D, B]
    return [percentile_interval(float(errors[:, j].mean()), means[:, j]) for j in range(errors.shape[1])]


def labels_saved_interval(
    budgets: np.ndarray, uniform: np.ndarray, plus: np.ndarray, resamples: np.ndarray
) -> Interval:
    """:func:`labels_saved` of the seed-mean curves of ``uniform`` and ``plus`` [S, B], paired bootstrap CI."""
    draws = np.array([labels_saved(budgets, uniform[rows].mean(0), plus[rows].mean(0)) for rows in resamples])
    return percentile_interval(labels_saved(budgets, uniform.mean(0), plus.mean(0)), draws)


def ratio_intervals(numerator: np.ndarray, denominator: np.ndarray, resamples: np.ndarray) -> list[Interval]:
    """Per budget: mean of ``numerator`` ÷ mean of ``denominator`` over seeds ([S, B] each, paired), with the
    bootstrap interval over ``resamples`` [D, S] (the same seeds drawn for both)."""
    draws = numerator[resamples].mean(axis=1) / denominator[resamples].mean(axis=1)  # [D, B]
    values = numerator.mean(axis=0) / denominator.mean(axis=0)
    return [percentile_interval(float(values[j]), draws[:, j]) for j in range(numerator.shape[1])]
