"""The online strategy benchmark's statistics and scoring, against independent computations, and its smoke run."""

from __future__ import annotations

import itertools
import json
import math
import sys

import numpy as np
import pytest
import torch

from benchmarks.paired_stats import bootstrap_mean_ci, compare, holm, wilcoxon_greater
from benchmarks.strategy_task import Task, preference_scores, task_prompts
from tests.conftest import REPO_ROOT


def exact_wilcoxon_greater(diffs: list[float]) -> float:
    """P(W+ ≥ observed) under H0 by enumerating all 2^n sign flips of the ranks (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(diffs))) + 1
    observed = ranks[np.asarray(diffs) > 0].sum()
    totals = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in itertools.product((0, 1),
                                                                                                    repeat=len(diffs))]
    return sum(total >= observed for total in totals) / len(totals)


def test_wilcoxon_matches_exact_enumeration() -> None:
    diffs = [0.031, -0.004, 0.012, 0.027, -0.019, 0.008, 0.015, 0.022, -0.001, 0.035]
    assert wilcoxon_greater(diffs) == pytest.approx(exact_wilcoxon_greater(diffs), abs=1e-12)
    assert wilcoxon_greater([0.0] * 5) == 1.0


def test_holm_step_down() -> None:
    # sorted 0.01, 0.02, 0.04 → ×3, ×2, ×1 = 0.03, 0.04, 0.04 (running max keeps the order)
    assert holm({"a": 0.04, "b": 0.01, "c": 0.02}) == pytest.approx({"a": 0.04, "b": 0.03, "c": 0.04})
    assert holm({"a": 0.6, "b": 0.5}) == {"a": 1.0, "b": 1.0}


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_seeds() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.01, 0.02, 10), rng.normal(0.01, 0.02, 400)
    for diffs in (small, large):
        low, high = bootstrap_mean_ci(list(diffs))
        assert low < diffs.mean() < high
    assert np.subtract(*bootstrap_mean_ci(list(large)))[()] > np.subtract(*bootstrap_mean_ci(list(small)))[()]


def test_compare_sees_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.6, 0.02, 20)
    result = compare({"random": list(base), "better": list(base + 0.01 + rng.normal(0, 0.002, 20)),
                      "same": list(base + rng.normal(0, 0.002, 20))}, "random")
    assert result["better"].p_value < 1e-4 and result["better"].ci95[0] > 0
    assert result["same"].p_holm > 0.05
    assert result["better"].p_holm == pytest.approx(min(1.0, 2 * result["better"].p_value))


def test_preference_scores_closed_form() -> None:
    margins = torch.tensor([1.0, -2.0, 0.0, 0.5])
    prob_1 = torch.tensor([0.9, 0.7, 0.3, 0.2], dtype=torch.float64)
    scores = preference_scores(margins, prob_1)
    assert scores["accuracy"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    expected = -sum(p * math.log(sigmoid(h)) + (1 - p) * math.log(sigmoid(-h))
                    for h, p in zip(margins.tolist(), prob_1.tolist(), strict=True)) / 4
    assert scores["log_loss"] == pytest.approx(expected)


def test_shipped_task_has_the_promised_sizes_and_disjoint_prompt_sets() -> None:
    task = Task()
    train, heldout, evaluation = task_prompts(task.heldout_prompts, task.eval_prompts)
    assert 32 <= task.labels_per_round <= 50 and 8 <= task.rounds <= 10 and task.responses >= 8
    assert task.prompts_per_round * math.comb(task.responses, 2) >= 1000
    assert task.heldout_prompts * math.comb(task.responses, 2) >= 1000
    ids = [{record.prompt for record in part} for part in (train, heldout, evaluation)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(train) >= task.prompts_per_round * task.rounds


def test_shipped_result_has_the_documented_schema() -> None:
    report = json.loads((REPO_ROOT / "benchmarks/results/strategies.json").read_text())
    seeds = report["seeds"]
    assert len(seeds) >= 10 and report["labels_per_round"] == 16 and report["rounds"] >= 5
    assert "random" in report["strategies"]
    for name, values in report["strategies"].items():
        assert len(values["auc"]) == len(seeds)
        if name != "random":
            comparison = report["comparisons"][name]
            diffs = np.asarray(values["auc"]) - np.asarray(report["strategies"]["random"]["auc"])
            assert comparison["vs"] == "random"
            assert comparison["mean_diff"] == pytest.approx(diffs.mean())
            assert comparison["p_value"] == pytest.approx(wilcoxon_greater(list(diffs)))
            assert comparison["ci95"][0] <= comparison["mean_diff"] <= comparison["ci95"][1]
    assert set(report["controls"]) == {"positive", "negative"}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_mode_runs_end_to_end(tmp_path) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.strategies import main

    assert main(["--quick", "--jobs", "2", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "strategies.json").read_text())
    assert set(report["strategies"]) == {"random", "activedpo", "adpo", "adpo_plus", "apo"}
    assert (tmp_path / "out" / "strategies.png").stat().st_size > 0
