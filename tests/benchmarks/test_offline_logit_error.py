"""The offline benchmark's quick mode end to end, its report against independent computations, and its statistics."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

METRICS = ("max_logit_error", "mean_logit_error", "error_rate")
STRATEGIES = ("random", "adpo", "adpo_plus", "ensemble")
ACTIVE = STRATEGIES[1:]


def _benchmark_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """``--quick`` once for the module: (the returned report, the output folder)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        benchmark = _benchmark_module("offline_logit_error", monkeypatch)
        out = tmp_path_factory.mktemp("offline")
        return benchmark.main(["--quick", "--out", str(out)]), out


def _mean_curve(rows: list[dict], strategy: str, metric: str, budgets: list[int]) -> list[float]:
    return [float(np.mean([row[metric] for row in rows if row["strategy"] == strategy and row["labels"] == budget]))
            for budget in budgets]


def _ratio_by_hand(budgets: list[int], uniform: list[float], plus: list[float]) -> float:
    """budgets[-1] ÷ the budget where ``plus`` first reaches uniform[-1], on the chord in (log n, log error)."""
    target = uniform[-1]
    below = [j for j, error in enumerate(plus) if error <= target]
    if not below:
        return 0.0
    j = below[0]
    if j == 0:
        return budgets[-1] / budgets[0]
    fraction = (math.log(target) - math.log(plus[j - 1])) / (math.log(plus[j]) - math.log(plus[j - 1]))
    needed = math.exp(math.log(budgets[j - 1]) + fraction * (math.log(budgets[j]) - math.log(budgets[j - 1])))
    return budgets[-1] / needed


def test_quick_run_writes_json_markdown_and_plot(quick_run: tuple[dict, Path]) -> None:
    report, out = quick_run
    saved = json.loads((out / "offline_logit_error.json").read_text())
    assert saved["labels_saved"] == report["labels_saved"]
    assert saved["seeds"] == 3 and saved["budgets"] == [32, 64, 128, 256, 512]
    assert saved["config"]["pool_log2"] == 12 and saved["config"]["refit_every"] <= 8
    assert len(saved["results"]) == 3 * len(STRATEGIES) * 5
    assert [row["seed"] for row in saved["cpu_seconds"]] == [0, 1, 2]
    assert all(row[part] > 0 for row in saved["cpu_seconds"] for part in (*STRATEGIES, "evaluation"))
    assert (out / "offline_logit_error.png").read_bytes().startswith(b"\x89PNG")
    text = (out / "offline_logit_error.md").read_text()
    ratios = [saved["labels_saved"][strategy]["mean_logit_error"] for strategy in ACTIVE]
    assert "| mean logit error | " + " | ".join(f"{r['value']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]"
                                                for r in ratios) + " |" in text
    assert "CPU s per seed" in text and "not a reproduction" in text


def test_merging_runs_over_disjoint_seeds_gives_the_one_run_report(
    quick_run: tuple[dict, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report, out = quick_run
    paths = []
    for name, seeds in (("first", {0}), ("rest", {1, 2})):
        part = dict(report, results=[row for row in report["results"] if row["seed"] in seeds],
                    cpu_seconds=[row for row in report["cpu_seconds"] if row["seed"] in seeds])
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(part))
    merged = _benchmark_module("offline_logit_error", monkeypatch).main(
        ["--merge", *map(str, paths), "--out", str(tmp_path / "merged")])
    assert merged["labels_saved"] == report["labels_saved"] and merged["curves"] == report["curves"]
    assert (tmp_path / "merged/offline_logit_error.png").exists()
    with pytest.raises(ValueError, match="a seed repeats"):
        _benchmark_module("offline_report", monkeypatch).merge_reports([paths[1], paths[1]], tmp_path / "twice")


def test_quick_run_is_paired_and_its_errors_are_sane(quick_run: tuple[dict, Path]) -> None:
    rows = quick_run[0]["results"]
    for strategy in STRATEGIES:
        assert {(row["seed"], row["labels"]) for row in rows if row["strategy"] == strategy} == {
            (seed, 2**j) for seed in range(3) for j in range(5, 10)}
    assert all(0 <= row["error_rate"] <= 1 and 0 < row["mean_logit_error"] <= row["max_logit_error"] for row in rows)
    # the strategies select different pairs, so their errors differ on every seed at the largest budget
    final = {(row["seed"], row["strategy"]): row["mean_logit_error"] for row in rows if row["labels"] == 512}
    assert all(len({final[seed, strategy] for strategy in STRATEGIES}) == len(STRATEGIES) for seed in range(3))


def test_quick_run_ratios_and_curves_match_an_independent_computation(quick_run: tuple[dict, Path]) -> None:
    report = quick_run[0]
    rows, budgets = report["results"], report["budgets"]
    for metric in METRICS:
        curves = {strategy: _mean_curve(rows, strategy, metric, budgets) for strategy in STRATEGIES}
        for strategy in STRATEGIES:
            points = report["curves"][metric][strategy]
            assert [point["value"] for point in points] == pytest.approx(curves[strategy], rel=1e-12)
            assert all(point["low"] <= point["value"] <= point["high"] for point in points)
        for strategy in ACTIVE:
            ratio = report["labels_saved"][strategy][metric]
            assert ratio["value"] == pytest.approx(_ratio_by_hand(budgets, curves["random"], curves[strategy]),
                                                   rel=1e-9)
            assert ratio["low"] <= ratio["value"] <= ratio["high"]
    uniform = _mean_curve(rows, "random", "mean_logit_error", budgets)
    for strategy in ACTIVE:
        relative = report["mean_logit_error_vs_uniform"][strategy]
        by_hand = [error / base for error, base in zip(_mean_curve(rows, strategy, "mean_logit_error", budgets),
                                                        uniform, strict=True)]
        assert [point["value"] for point in relative] == pytest.approx(by_hand, rel=1e-12)
        assert all(point["low"] <= point["value"] <= point["high"] for point in relative)


def test_labels_needed_interpolates_on_log_log_axes(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = _benchmark_module("offline_stats", monkeypatch)
    budgets = np.array([32, 64, 128])
    errors = np.array([4.0, 2.0, 1.0])  # error ∝ 1/n
    assert stats.labels_needed(budgets, errors, 1.5) == pytest.approx(128 * 2 / 3)
    assert stats.labels_needed(budgets, errors, 0.5) == math.inf
    assert stats.labels_needed(budgets, errors, 9.0) == 32
    # ADPO+ halving Uniform's error at every budget saves 2x labels on a 1/n curve
    assert stats.labels_saved(budgets, errors, errors / 2) == pytest.approx(2.0)


def test_bootstrap_intervals_resample_seeds_in_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = _benchmark_module("offline_stats", monkeypatch)
    budgets = np.array([32, 64, 128])
    uniform = np.array([[4.0, 2.0, 1.0], [8.0, 4.0, 2.0]])  # [S=2, B=3]
    plus = uniform / np.array([[2.0], [4.0]])  # seed 0 saves 2x, seed 1 saves 4x
    resamples = np.array([[0, 0], [1, 1], [0, 1]])
    interval = stats.labels_saved_interval(budgets, uniform, plus, resamples)
    # draws: both seed 0 → 2x, both seed 1 → 4x, the pair → the mean curves; unpaired draws could not give 2x
    mean_ratio = stats.labels_saved(budgets, uniform.mean(0), plus.mean(0))
    assert interval.value == pytest.approx(mean_ratio)
    assert interval.low == pytest.approx(np.percentile([2.0, 4.0, mean_ratio], 2.5))
    assert interval.high == pytest.approx(np.percentile([2.0, 4.0, mean_ratio], 97.5))
    curve = stats.curve_intervals(uniform, resamples)
    assert [point.value for point in curve] == pytest.approx([6.0, 3.0, 1.5])
    assert curve[0].low == pytest.approx(np.percentile([4.0, 8.0, 6.0], 2.5))
    assert stats.seed_resamples(5, 7, seed=1).shape == (7, 5)
