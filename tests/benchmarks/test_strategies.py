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
from benchmarks.strategy_task import PRIMARY, SCORES, Task, preference_scores, task_prompts
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


def synthetic_results(seeds: int = 8, rounds: int = 4) -> list[dict]:
    """Per-seed results of every run of :func:`benchmarks.strategies.seed_jobs`: every score improves by 0.02 a
    round (in its better direction) plus noise; "adpo" is 0.01 better than random in every round and score."""
    from benchmarks.strategies import STRATEGIES, Job, seed_jobs

    rng = np.random.default_rng(0)
    task = {"rounds": rounds, "labels_per_round": 48}
    results = []
    for seed in range(seeds):
        runs = {}
        for job in seed_jobs(Task(), REPO_ROOT, seed, 0.07, STRATEGIES):
            shift = 0.01 if job == Job(Task(), REPO_ROOT, seed, "adpo", 0.07) else 0.0
            curves: dict[str, list[float]] = {"labels": [48.0 * r for r in range(rounds + 1)]}
            for score, higher in SCORES.items():
                sign = 1.0 if higher else -1.0
                curves[score] = [0.5] + [0.6 + sign * (0.02 * r + shift) + rng.normal(0, 0.003) for r in range(rounds)]
            runs[job.name] = {"curves": curves, "wall_time_s": 60.0}
        results.append({"seed": seed, "task": task, "temperature": 0.07, "teacher_temperature": 0.5,
                        "strategies": list(STRATEGIES), "runs": runs})
    return results


def test_report_matches_independent_computations() -> None:
    from benchmarks.strategies import NEGATIVE_OFFSET, summarise

    results = synthetic_results()
    report = summarise(results)
    sign = 1.0 if SCORES[PRIMARY] else -1.0  # turns the primary score into "higher is better"
    score = {name: sign * np.array([r["runs"][f"{name}+0"]["curves"][PRIMARY] for r in results])
             for name in ("random", "adpo")}
    diffs = score["adpo"][:, 1:].mean(1) - score["random"][:, 1:].mean(1)
    adpo = report["comparisons"]["adpo"]
    assert adpo["mean_diff"] == pytest.approx(diffs.mean()) and adpo["mean_diff"] > 0
    assert adpo["p_value"] == pytest.approx(wilcoxon_greater(list(diffs)))
    assert adpo["ci95"][0] <= adpo["mean_diff"] <= adpo["ci95"][1]
    assert report["primary_metric"]["name"] == PRIMARY
    assert report["primary_metric"]["higher_is_better"] == SCORES[PRIMARY]
    assert report["strategies"]["adpo"]["primary_curve_mean"] == pytest.approx((sign * score["adpo"]).mean(0).tolist())
    # labels saved, by hand: random's last-round mean score, where adpo's mean curve first reaches it
    # (linear in log n between the two rounds around the crossing)
    budgets = np.array([48.0, 96.0, 144.0, 192.0])
    target, curve = score["random"][:, -1].mean(), score["adpo"][:, 1:].mean(0)
    j = int(np.argmax(curve >= target))
    needed = float(np.exp(np.interp(target, curve[j - 1:j + 1], np.log(budgets[j - 1:j + 1]))))
    saved = report["labels_saved"]["adpo"]
    assert saved["ratio"] == pytest.approx(192.0 / needed) and saved["ratio"] > 1
    assert saved["ci95"][0] <= saved["ratio"] <= saved["ci95"][1]
    control = sign * np.array([r["runs"][f"random+{NEGATIVE_OFFSET}"]["curves"][PRIMARY] for r in results])
    assert report["learning"]["gain"] == pytest.approx((score["random"][:, -1] - score["random"][:, 1]).mean())
    assert report["learning"]["noise_sd"] == pytest.approx((score["random"][:, -1] - control[:, -1]).std(ddof=1))
    negative = report["controls"]["negative"]
    assert negative["mean_diff"] == pytest.approx((control[:, 1:].mean(1) - score["random"][:, 1:].mean(1)).mean())
    assert set(report["controls"]) == {"negative", "positive", "fixed_pool", "apo_vs_fixed_pool_random"}
    assert set(report["secondary_comparisons"]) == set(SCORES) - {PRIMARY}


def test_shipped_result_has_the_documented_schema() -> None:
    report = json.loads((REPO_ROOT / "benchmarks/results/strategies.json").read_text())
    seeds = report["seeds"]
    assert len(seeds) >= 10 and report["rounds"] >= 8 and 32 <= report["labels_per_round"] <= 50
    primary = report["primary_metric"]
    assert (primary["name"], primary["higher_is_better"]) == (PRIMARY, SCORES[PRIMARY])
    sign = 1.0 if SCORES[PRIMARY] else -1.0  # turns the primary score into "higher is better"
    random_auc = sign * np.asarray(report["strategies"]["random"]["primary_auc"])
    for name, values in report["strategies"].items():
        assert len(values["primary_auc"]) == len(seeds) and len(values["primary_curve_mean"]) == report["rounds"] + 1
        if name != "random":
            comparison = report["comparisons"][name]
            diffs = sign * np.asarray(values["primary_auc"]) - random_auc  # > 0: better than random
            assert comparison["vs"] == "random"
            assert comparison["mean_diff"] == pytest.approx(diffs.mean())
            assert comparison["p_value"] == pytest.approx(wilcoxon_greater(list(diffs)))
            assert comparison["ci95"][0] <= comparison["mean_diff"] <= comparison["ci95"][1]
            assert set(report["labels_saved"][name]) == {"ratio", "ci95"}
    assert {"positive", "negative"} <= set(report["controls"])
    assert set(report["learning"]) == {"gain", "noise_sd"}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_mode_runs_end_to_end(tmp_path) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.strategies import STRATEGIES, main

    assert main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "strategies.json").read_text())
    assert set(report["strategies"]) == set(STRATEGIES)
    assert (tmp_path / "out" / "strategies.png").stat().st_size > 0
