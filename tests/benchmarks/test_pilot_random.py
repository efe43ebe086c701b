"""The random-only pilot's report: gain, noise SD and the middle check against independent computations."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks.pilot_random import DIAGNOSIS, power_analysis, summarise, write_markdown  # noqa: E402
from benchmarks.strategies import NEGATIVE_OFFSET  # noqa: E402
from benchmarks.strategy_task import PRIMARY, SCORES  # noqa: E402

ROUNDS = 4


def curves(rng: np.random.Generator, start: float, step: float) -> dict[str, list[float]]:
    """Per-round scores of one run: log-loss falling by ``step`` a round (plus noise), the others rising."""
    loss = [0.6931] + [start - step * r + rng.normal(0, 0.003) for r in range(ROUNDS)]
    rising = [0.5] + [0.6 + step * r + rng.normal(0, 0.003) for r in range(ROUNDS)]
    return {"log_loss": loss, "accuracy": rising, "reward": rising, "win_rate": rising,
            "labels": [48.0 * r for r in range(ROUNDS + 1)]}


@pytest.fixture
def results() -> list[dict]:
    rng = np.random.default_rng(0)
    task = {"rounds": ROUNDS, "labels_per_round": 48}
    return [{"seed": seed, "temperature": 0.07, "task": task,
             "runs": {"0": {"curves": curves(rng, 0.68, 0.02), "wall_time_s": 100.0},
                      str(NEGATIVE_OFFSET): {"curves": curves(rng, 0.68, 0.02), "wall_time_s": 120.0}}}
            for seed in range(6)]


def test_gain_noise_and_ratio_match_numpy(results: list[dict]) -> None:
    report = summarise(results, {})
    loss = np.array([result["runs"]["0"]["curves"]["log_loss"] for result in results])
    control = np.array([result["runs"][str(NEGATIVE_OFFSET)]["curves"]["log_loss"] for result in results])
    gain = (loss[:, 1] - loss[:, ROUNDS]).mean()  # lower log-loss is better: first trained round minus last
    noise_sd = (loss[:, ROUNDS] - control[:, ROUNDS]).std(ddof=1)
    learning = report["learning"]["log_loss"]
    assert learning["gain"] == pytest.approx(gain) and gain > 0
    assert learning["noise_sd"] == pytest.approx(noise_sd)
    assert learning["ratio"] == pytest.approx(gain / noise_sd)
    auc_diffs = loss[:, 1:].mean(axis=1) - control[:, 1:].mean(axis=1)
    assert learning["auc_noise_sd"] == pytest.approx(auc_diffs.std(ddof=1))
    assert learning["ends_at_or_beyond_middle"] and not learning["higher_is_better"]
    assert report["learning"]["accuracy"]["gain"] == pytest.approx(gain, abs=0.01)  # rises by the same step: a gain too
    assert report["per_round"]["log_loss"]["mean"] == pytest.approx(loss.mean(axis=0).tolist())
    low, high = report["per_round"]["log_loss"]["ci95"][2]
    assert low < loss[:, 2].mean() < high
    assert report["primary_metric"] == {"name": PRIMARY, "higher_is_better": SCORES[PRIMARY]}
    assert report["wall_time_s_per_run"] == {"mean": 110.0, "max": 120.0}


def test_a_curve_that_ends_worse_than_its_middle_is_flagged(results: list[dict]) -> None:
    for result in results:
        result["runs"]["0"]["curves"]["log_loss"][ROUNDS] = 0.70  # back above every middle value
    assert not summarise(results, {})["learning"]["log_loss"]["ends_at_or_beyond_middle"]


def test_markdown_keeps_the_written_diagnosis(results: list[dict], tmp_path) -> None:
    path = tmp_path / "pilot.md"
    path.write_text("old tables" + DIAGNOSIS + "\nWhat was wrong.\n")
    write_markdown(summarise(results, {}), path)
    text = path.read_text()
    assert "old tables" not in text and text.endswith(DIAGNOSIS + "\nWhat was wrong.\n")
    assert f"| {PRIMARY} (primary) | {'higher' if SCORES[PRIMARY] else 'lower'} |" in text



def test_power_analysis_on_an_exact_power_law() -> None:
    """On a curve a·n^b the fit is exact, the advantage of k-fold fewer labels is mean_n a·n^b·|k^b − 1|, the
    detectable δ(n) = (z_{1−α/5} + z_{0.8})·σ/√n, and the k reported for δ has exactly that advantage."""
    from scipy.stats import norm

    labels = [48.0 * r for r in range(1, 9)]
    a, b, sigma = 0.15, 0.05, 0.01
    curve = [a * n**b for n in labels]
    power = power_analysis(labels, curve, sigma, True)
    assert power["fit"] == pytest.approx({"a": a, "b": b})
    for k, value in power["advantage_of_labels_saved"].items():
        assert value == pytest.approx(np.mean([a * n**b * abs(float(k) ** b - 1) for n in labels]))
    z = norm.ppf(1 - 0.05 / 5) + norm.ppf(0.8)
    for seeds, delta in power["detectable"].items():
        assert delta == pytest.approx(z * sigma / np.sqrt(int(seeds)))
        k = power["detectable_labels_saved"][seeds]
        assert np.mean([a * n**b * (k**b - 1) for n in labels]) == pytest.approx(delta, rel=1e-6)
