"""The offline sample-efficiency benchmark runs end to end at a tiny size (so the script cannot rot)."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT


def _load_benchmark():
    path = REPO_ROOT / "benchmarks/offline_logit_error.py"
    spec = importlib.util.spec_from_file_location("offline_logit_error", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_benchmark_writes_csv_plot_and_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    benchmark = _load_benchmark()
    ratios = benchmark.main(
        ["--seeds", "2", "--max-log2", "6", "--pca", "4", "--pairs-per-image", "2", "--batch-size", "16",
         "--out", str(tmp_path)]
    )
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 2 * 3 * 2  # seeds × strategies × budgets (32, 64)
    assert {row["strategy"] for row in rows} == {"random", "adpo", "adpo_plus"}
    assert all(0 <= float(row["error_rate"]) <= 1 and float(row["mean_logit_error"]) > 0 for row in rows)
    assert (tmp_path / "logit_error.png").read_bytes().startswith(b"\x89PNG")
    assert set(ratios) == {"max_logit_error", "mean_logit_error", "error_rate"}
    assert all(ratio > 0 and not math.isnan(ratio) for ratio in ratios.values())
    assert "labels saved (mean_logit_error)" in capsys.readouterr().out


def test_labels_needed_interpolates_on_log_log_axes() -> None:
    benchmark = _load_benchmark()
    budgets = np.array([32, 64, 128])
    errors = np.array([4.0, 2.0, 1.0])  # error ∝ 1/n
    assert benchmark.labels_needed(budgets, errors, 1.5) == pytest.approx(128 * 2 / 3)
    assert benchmark.labels_needed(budgets, errors, 0.5) == math.inf
    assert benchmark.labels_needed(budgets, errors, 9.0) == 32
