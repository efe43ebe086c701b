"""Offline, in the ADPO paper's spirit: labels Uniform needs ÷ labels an active strategy needs for the same logit error.

The ADPO paper's own offline experiments are CIFAR-10/100 and Nectar; this is our construction on the same lines, not a
reproduction. A log-linear preference model on scikit-learn's bundled digits. A context x is an 8×8 digit, shifted by
at most one pixel (9 shifts of each training digit: 11 313 contexts, 509 085 context × class-pair rows);
f(x) = (PCA-``pca`` of the standardised pixels, 1) scaled to ‖f‖ = 1, responses are the 10 classes and
φ(x, y1, y2) = (e_y1 − e_y2) ⊗ f(x) ∈ R^{10·(pca+1)}, so ‖φ‖ = √2 (bounded features). θ* is a multinomial
logistic regression fit on the unshifted digits; a pool pair gets "y1 preferred" with Bradley–Terry
probability σ(θ*ᵀφ). Per seed one pool of 2^pool_log2 rows and one set of labels is drawn and every
strategy selects from it (paired):

- ``random`` (Uniform): a uniform permutation of the pool;
- ``adpo`` (ADPO): greedy D-optimal on φ, argmax φᵀV⁻¹φ, V = λI + Σ φφᵀ;
- ``adpo_plus`` (ADPO+): ``warm_start`` uniform picks, then greedy on √w·φ, refitting the plug-in θ̂ (logistic
  fit with its own ridge ``plugin_l2``, default ``selection.plugin_l2``) on the labels revealed so far every
  ``refit_every`` picks and re-weighting every term of V with w = μ(1 − μ), μ = σ(θ̂ᵀφ)
  (``system.selection.offline.select_offline``, the code ``activealign select`` runs);
- ``ensemble`` (SEA-style): 8 anchored logistic heads refit on the revealed labels every ``refit_every`` picks,
  the top pairs by their disagreement Var_m σ(θ_mᵀφ) (``system.selection.ensemble``).

At each budget n = 2^min_log2 … 2^max_log2, θ̂ is the same near-unregularised logistic MLE (ridge ``l2``) on the
first n picks, scored on held-out digits × all 45 class pairs: max and mean |θ̂ᵀφ − θ*ᵀφ| and the rate of flipped
preferences. ``offline_stats`` turns the seeds into curves, labels-saved ratios and bootstrap CIs.

    .venv/bin/python benchmarks/offline_logit_error.py            # 10 seeds, pool 2^17, budgets 2^6…2^15
    .venv/bin/python benchmarks/offline_logit_error.py --quick    # 3 seeds, pool 2^12, budgets 2^5…2^9 (< 1 min)

Writes ``offline_logit_error.{json,md,png}`` to ``--out`` after every seed, so a stopped run leaves the seeds
it finished.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from offline_report import merge_reports, write_report
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from system.config import SelectionConfig
from system.selection import DesignState, fit_linear_dpo, get_strategy
from system.selection.offline import OfflinePool, select_offline

STRATEGIES = ("random", "adpo", "adpo_plus", "ensemble")
NUM_CLASSES = 10
CLASS_PAIRS = np.array(list(itertools.combinations(range(NUM_CLASSES), 2)))
QUICK = {"seeds": 3, "pool_log2": 12, "min_log2": 5, "max_log2": 9, "warm_start": 32}


@dataclass(frozen=True)
class Digits:
    """Unit-norm context features f(x) and the true per-class parameters θ* [10, pca+1].

    Attributes:
        contexts: [C, pca+1] training digits and their one-pixel shifts.
        test: [T, pca+1] held-out unshifted digits.
        theta_star: [10·(pca+1)] flattened θ*.
    """

    contexts: np.ndarray
    test: np.ndarray
    theta_star: torch.Tensor


def shifted(images: np.ndarray) -> np.ndarray:
    """[M, 8, 8] digits → [9·M, 8, 8]: every shift by (−1, 0, 1) rows and columns, zero-filled."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    return np.concatenate([padded[:, 1 + dr:9 + dr, 1 + dc:9 + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)])


def build_digits(pca_dims: int, truth_c: float) -> Digits:
    """Standardise + PCA fit on all digits; f = (pcs / std, 1) / ‖·‖; θ* = multinomial LR (C = ``truth_c``)."""
    data = load_digits()
    scaler = StandardScaler().fit(data.data)
    pca = PCA(pca_dims, random_state=0).fit(scaler.transform(data.data))
    scale = pca.transform(scaler.transform(data.data)).std(0)

    def features(pixels: np.ndarray) -> np.ndarray:
        reduced = pca.transform(scaler.transform(pixels)) / scale
        raw = np.hstack([reduced, np.ones((len(reduced), 1))])
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)

    truth = LogisticRegression(C=truth_c, fit_intercept=False, max_iter=5000).fit(features(data.data), data.target)
    train, test = train_test_split(np.arange(len(data.target)), test_size=0.3, random_state=0)
    contexts = features(shifted(data.images[train]).reshape(-1, 64))
    return Digits(contexts, features(data.data[test]), torch.from_numpy(truth.coef_.reshape(-1)))


def pair_features(contexts: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """φ = (e_y1 − e_y2) ⊗ f(x) for rows (context, class pair index) [n, 2] → [n, 10·(pca+1)] float64."""
    first, second = CLASS_PAIRS[rows[:, 1]].T
    phi = np.zeros((len(rows), NUM_CLASSES, contexts.shape[1]))
    phi[np.arange(len(rows)), first] += contexts[rows[:, 0]]
    phi[np.arange(len(rows)), second] -= contexts[rows[:, 0]]
    return torch.from_numpy(phi.reshape(len(rows), -1))


def all_pairs(num_contexts: int) -> np.ndarray:
    """Every (context, class pair) row [num_contexts·45, 2]."""
    return np.stack(np.meshgrid(np.arange(num_contexts), np.arange(len(CLASS_PAIRS)), indexing="ij"), -1).reshape(-1, 2)


def draw_pool(digits: Digits, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` distinct rows of contexts × class pairs and Bradley–Terry labels: (φ [size, k], y1 wins [size])."""
    rows = all_pairs(len(digits.contexts))
    rng = np.random.default_rng(seed)
    phi = pair_features(digits.contexts, rows[rng.choice(len(rows), size, replace=False)])
    prefer_first = torch.from_numpy(rng.random(size)) < torch.sigmoid(phi @ digits.theta_star)
    return phi, prefer_first


def logit_errors(theta: torch.Tensor, test_phi: torch.Tensor, test_margin: torch.Tensor) -> dict[str, float]:
    """Max and mean |θ̂ᵀφ − θ*ᵀφ| and the flipped-preference rate over held-out pairs φ [T, k]."""
    predicted = test_phi @ theta
    error = (predicted - test_margin).abs()
    return {"max_logit_error": float(error.max()), "mean_logit_error": float(error.mean()),
            "error_rate": float(((predicted > 0) != (test_margin > 0)).double().mean())}


def select(
    args: argparse.Namespace, strategy: str, phi: torch.Tensor, prefer_first: torch.Tensor, seed: int
) -> list[int]:
    """Pool indices the strategy picks, in order, through the library's offline path (labels revealed per batch)."""
    labels = [1 if bool(value) else 2 for value in prefer_first]
    pool = OfflinePool(Path("digits"), [{} for _ in labels], [str(i) for i in range(len(labels))], labels,
                       list(range(1, len(labels) + 1)))
    rule = get_strategy(strategy)
    budget = 2**args.max_log2
    # Uniform and ADPO never read a label, so revealing per batch would change nothing: one batch.
    batch_size = args.refit_every if rule.needs_weights or rule.learns_from_labels else budget
    rows = select_offline(pool, phi, rule, budget, batch_size, DesignState(phi.shape[1], args.reg), seed=seed,
                          plugin_l2=args.plugin_l2, warm_start=args.warm_start if rule.needs_weights else 0)
    return [int(row["pair_id"]) for row in rows]


def run_seed(args: argparse.Namespace, digits: Digits, seed: int) -> tuple[list[dict], dict[str, float]]:
    """One pool, one label draw, every strategy: (rows per strategy × budget, CPU seconds per strategy and for
    the evaluation fits). CPU time of this process, not wall time, so a busy machine does not inflate it."""
    phi, prefer_first = draw_pool(digits, 2**args.pool_log2, seed)
    test_rows = all_pairs(len(digits.test))
    test_phi = pair_features(digits.test, test_rows)
    test_margin = test_phi @ digits.theta_star
    results: list[dict] = []
    seconds = {"seed": float(seed), "evaluation": 0.0}
    for strategy in STRATEGIES:
        started = time.process_time()
        picks = select(args, strategy, phi, prefer_first, seed)
        seconds[strategy] = time.process_time() - started
        started = time.process_time()
        for log2 in range(args.min_log2, args.max_log2 + 1):
            chosen = picks[: 2**log2]
            theta = fit_linear_dpo(phi[chosen], prefer_first[chosen], args.l2)
            results.append({"seed": seed, "strategy": strategy, "labels": 2**log2,
                            **logit_errors(theta, test_phi, test_margin)})
        seconds["evaluation"] += time.process_time() - started
        print(f"seed {seed} {strategy:10s} selected in {seconds[strategy]:7.1f} CPU s; at {2**args.max_log2} labels "
              f"mean logit error {results[-1]['mean_logit_error']:.4f}", flush=True)
    return results, seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed … first-seed + seeds − 1")
    parser.add_argument("--pool-log2", type=int, default=17, help="pool of 2^this pairs")
    parser.add_argument("--min-log2", type=int, default=6, help="smallest budget 2^this")
    parser.add_argument("--max-log2", type=int, default=15, help="largest budget 2^this")
    parser.add_argument("--pca", type=int, default=5, help="context feature dims (φ has 10·(pca+1))")
    parser.add_argument("--truth-c", type=float, default=1.0, help="inverse ridge of the θ* fit")
    parser.add_argument("--refit-every", type=int, default=8,
                        help="ADPO+ refits θ̂ and re-weights V (the ensemble refits its heads) every this many picks")
    parser.add_argument("--warm-start", type=int, default=64, help="ADPO+'s first picks, uniform")
    parser.add_argument("--reg", type=float, default=1.0, help="λ of the design V = λI + Σ w φφᵀ")
    parser.add_argument("--plugin-l2", type=float, default=SelectionConfig().plugin_l2,
                        help="ridge of ADPO+'s plug-in fit (selection.plugin_l2)")
    parser.add_argument("--l2", type=float, default=1e-4, help="ridge of the evaluated logistic fit at each budget")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws of the seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help=f"small run: {QUICK}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--merge", type=Path, nargs="+", help="no run: one report from these runs' JSON files "
                        "(seeds run in parallel processes with --first-seed)")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run every seed, rewriting the report after each (or merge finished runs); returns the report's JSON content."""
    args = parse_args(argv)
    if args.merge:
        return merge_reports(args.merge, args.out)
    torch.set_num_threads(args.threads)
    digits = build_digits(args.pca, args.truth_c)
    results: list[dict] = []
    seconds: list[dict[str, float]] = []
    report: dict = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        seed_results, seed_seconds = run_seed(args, digits, seed)
        results += seed_results
        seconds.append(seed_seconds)
        report = write_report(vars(args), results, seconds)
    return report


if __name__ == "__main__":
    main()
