"""Seed 000's offline sample-efficiency experiment rebuilt on scikit-learn's bundled digits.

x = an 8×8 digit (standardised, PCA to ``--pca`` dims, plus a constant), responses = the 10 classes,
φ(x, y) = one-hot(y) ⊗ f(x). The ground truth θ* is a multinomial logistic regression fitted on all
digits; a pool pair (x, y1, y2) gets the label "y1 preferred" with Bradley–Terry probability
σ(θ*ᵀ(φ1 − φ2)). Each strategy selects up to 2^max_log2 pool pairs through the library's offline path
(labels revealed only after selection, ADPO+ refitting its plug-in estimate every ``--batch-size`` picks);
θ̂ is fit by logistic DPO on each budget's first n picks and scored on held-out digits × all class
pairs: max and mean |θ̂ᵀφ − θ*ᵀφ| (logit error) and the rate of flipped preferences.

    .venv/bin/python benchmarks/offline_logit_error.py            # ≈ a few minutes on 2 cores
    .venv/bin/python benchmarks/offline_logit_error.py --seeds 2 --max-log2 6 --out /tmp/x   # smoke size

Prints the labels-saved ratio: labels Uniform needs for its error at the largest budget ÷ labels ADPO+
needs for the same error (log-log interpolation between budgets).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from system.fileio import atomic_output, atomic_write_text  # noqa: E402
from system.selection import DesignState, fit_linear_dpo, get_strategy  # noqa: E402
from system.selection.offline import OfflinePool, select_offline  # noqa: E402

STRATEGIES = {"random": "Uniform", "adpo": "ADPO (D-optimal)", "adpo_plus": "ADPO+"}
METRICS = ("max_logit_error", "mean_logit_error", "error_rate")
NUM_CLASSES = 10


@dataclass
class Problem:
    """Pool and held-out pair features with ground-truth margins θ*ᵀφ."""

    pool_phi: torch.Tensor
    pool_margin: torch.Tensor
    test_phi: torch.Tensor
    test_margin: torch.Tensor


def pair_features(features: np.ndarray, pairs: np.ndarray) -> torch.Tensor:
    """φ(x, y1) − φ(x, y2) with φ(x, y) = one-hot(y) ⊗ f(x), for rows (image, y1, y2) → [n, 10·d]."""
    images, first, second = pairs.T
    phi = np.zeros((len(pairs), NUM_CLASSES, features.shape[1]))
    phi[np.arange(len(pairs)), first] += features[images]
    phi[np.arange(len(pairs)), second] -= features[images]
    return torch.from_numpy(phi.reshape(len(pairs), -1))


def build_problem(pca_dims: int, pairs_per_image: int, seed: int) -> Problem:
    """Digits → features, θ* (C = 0.1), a pool of ``pairs_per_image`` random class pairs per training image."""
    digits, classes = load_digits(return_X_y=True)
    reduced = PCA(pca_dims, random_state=0).fit_transform(StandardScaler().fit_transform(digits))
    features = np.hstack([reduced / reduced.std(0), np.ones((len(reduced), 1))])
    truth = LogisticRegression(C=0.1, fit_intercept=False, max_iter=5000).fit(features, classes)
    theta_star = torch.from_numpy(truth.coef_.reshape(-1))
    train, test = train_test_split(np.arange(len(features)), test_size=0.3, random_state=0)
    class_pairs = np.array(list(itertools.combinations(range(NUM_CLASSES), 2)))
    rng = np.random.default_rng(seed)
    pool_rows = np.array(
        [(i, *class_pairs[j]) for i in train for j in rng.choice(len(class_pairs), pairs_per_image, replace=False)]
    )
    test_rows = np.array([(i, a, b) for i in test for a, b in class_pairs])
    pool_phi, test_phi = pair_features(features, pool_rows), pair_features(features, test_rows)
    return Problem(pool_phi, pool_phi @ theta_star, test_phi, test_phi @ theta_star)


def evaluate(problem: Problem, picks: list[int], labels: torch.Tensor, l2: float) -> dict[str, float]:
    """Fit θ̂ by logistic DPO on the picked pairs; logit errors and flipped-preference rate on held-out pairs."""
    theta = fit_linear_dpo(problem.pool_phi[picks], labels[picks], l2)
    predicted = problem.test_phi @ theta
    error = (predicted - problem.test_margin).abs()
    flipped = (predicted > 0) != (problem.test_margin > 0)
    return {"max_logit_error": float(error.max()), "mean_logit_error": float(error.mean()),
            "error_rate": float(flipped.double().mean())}


def run(args: argparse.Namespace) -> list[dict[str, float | int | str]]:
    """One row per (seed, strategy, budget)."""
    torch.set_num_threads(args.threads)
    budgets = [2**j for j in range(5, args.max_log2 + 1)]
    results: list[dict[str, float | int | str]] = []
    for seed in range(args.seeds):
        problem = build_problem(args.pca, args.pairs_per_image, seed)
        generator = torch.Generator().manual_seed(1000 + seed)
        prefer_first = torch.rand(len(problem.pool_margin), generator=generator, dtype=torch.float64) < torch.sigmoid(
            problem.pool_margin
        )
        sealed = [1 if bool(value) else 2 for value in prefer_first]
        for strategy in STRATEGIES:
            started = time.perf_counter()
            pool = OfflinePool(Path("digits"), [{} for _ in sealed], [str(i) for i in range(len(sealed))], sealed,
                               list(range(1, len(sealed) + 1)))
            state = DesignState(problem.pool_phi.shape[1], args.reg, refactor_every=256)
            rows = select_offline(pool, problem.pool_phi, get_strategy(strategy), budgets[-1], args.batch_size, state,
                                  seed=seed, plugin_l2=args.l2)
            picks = [int(row["pair_id"]) for row in rows]
            for budget in budgets:
                metrics = evaluate(problem, picks[:budget], prefer_first, args.l2)
                results.append({"seed": seed, "strategy": strategy, "labels": budget, **metrics})
            print(f"seed {seed} {strategy:10s} {time.perf_counter() - started:6.1f} s  "
                  f"mean logit error at {budgets[-1]}: {results[-1]['mean_logit_error']:.3f}", flush=True)
    return results


def curve(results: list[dict], strategy: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(budgets, mean over seeds, std over seeds) of ``metric`` for ``strategy``."""
    budgets = sorted({int(row["labels"]) for row in results})
    values = np.array([[row[metric] for row in results if row["strategy"] == strategy and row["labels"] == budget]
                       for budget in budgets])
    return np.array(budgets), values.mean(1), values.std(1)


def labels_needed(budgets: np.ndarray, errors: np.ndarray, target: float) -> float:
    """Smallest n where the (log-log interpolated) error curve reaches ``target``; inf if it never does."""
    for j, error in enumerate(errors):
        if error <= target:
            if j == 0:
                return float(budgets[0])
            slope = (math.log(errors[j]) - math.log(errors[j - 1])) / (math.log(budgets[j]) - math.log(budgets[j - 1]))
            return float(budgets[j - 1] * math.exp((math.log(target) - math.log(errors[j - 1])) / slope))
    return math.inf


def labels_saved(results: list[dict], metric: str) -> float:
    """Labels Uniform needs for its final error ÷ labels ADPO+ needs for the same error."""
    budgets, uniform, _ = curve(results, "random", metric)
    _, plus, _ = curve(results, "adpo_plus", metric)
    return float(budgets[-1]) / labels_needed(budgets, plus, float(uniform[-1]))


def plot(results: list[dict], out: Path) -> None:
    """Error vs labels (log2 x-axis), one line per strategy, ±1 std over seeds shaded."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(15, 4))
    for axis, metric in zip(axes, METRICS, strict=True):
        for strategy, label in STRATEGIES.items():
            budgets, mean, std = curve(results, strategy, metric)
            axis.plot(budgets, mean, marker="o", label=label)
            axis.fill_between(budgets, mean - std, mean + std, alpha=0.2)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("labelled pairs")
        axis.set_title(metric.replace("_", " "))
        axis.legend()
    seeds = len({row["seed"] for row in results})
    fig.suptitle(f"Offline active DPO on digits (mean ± std over {seeds} seeds)")
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_csv(results: list[dict], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(results[0]))
    writer.writeheader()
    writer.writerows(results)
    atomic_write_text(out, buffer.getvalue())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-log2", type=int, default=11, help="largest budget is 2^this (smallest is 2^5)")
    parser.add_argument("--pca", type=int, default=12, help="image feature dims (φ has 10·(pca+1))")
    parser.add_argument("--pairs-per-image", type=int, default=6, help="random class pairs per pool image")
    parser.add_argument("--batch-size", type=int, default=64, help="labels revealed (ADPO+ refits) every this many")
    parser.add_argument("--reg", type=float, default=1.0, help="λ of the design V = λI + Σ w φφᵀ")
    parser.add_argument("--l2", type=float, default=1.0, help="ridge of the logistic DPO fits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/offline_logit_error"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    started = time.perf_counter()
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(results, args.out / "results.csv")
    plot(results, args.out / "logit_error.png")
    ratios = {metric: labels_saved(results, metric) for metric in METRICS}
    elapsed = time.perf_counter() - started
    print(f"\nwrote {args.out / 'results.csv'} and {args.out / 'logit_error.png'} in {elapsed:.0f} s")
    for strategy in STRATEGIES:
        row = {metric: curve(results, strategy, metric)[1][-1] for metric in METRICS}
        print(f"{STRATEGIES[strategy]:18s} at {2**args.max_log2} labels: " + ", ".join(
            f"{metric} {value:.3f}" for metric, value in row.items()))
    for metric, ratio in ratios.items():
        print(f"labels saved ({metric}): Uniform needs {ratio:.2f}x the labels ADPO+ needs for Uniform's final error")
    return ratios


if __name__ == "__main__":
    main()
