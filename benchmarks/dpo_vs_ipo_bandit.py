"""The DPO-vs-IPO 3-armed bandit (docs/method.md, "Losses"): DPO vs IPO against the optimal policy π* ∝ πref·exp(s/β).

Fits a softmax policy with each loss on the exact expected loss (full-batch L-BFGS), prints KL(π*‖π) for both
and their ratio, and writes a PNG with the three policies and the training curves.

    .venv/bin/python benchmarks/dpo_vs_ipo_bandit.py [--out benchmarks/out/dpo_vs_ipo_bandit.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from system.bandit import BanditFit, BanditProblem, fit_policy, kl_divergence  # noqa: E402
from system.fileio import atomic_output  # noqa: E402


def plot(problem: BanditProblem, fits: dict[str, BanditFit], out: Path) -> None:
    """Bar chart of π*, π_DPO, π_IPO per arm and KL(π*‖π_t) per L-BFGS iteration."""
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4))
    arms = np.arange(len(problem.scores))
    policies = {"π* (optimal)": problem.optimal_policy()}
    policies.update({f"π_{name.upper()}": fit.policy for name, fit in fits.items()})
    for offset, (label, policy) in enumerate(policies.items()):
        bars.bar(arms + (offset - 1) * 0.27, policy.numpy(), width=0.27, label=label)
    bars.set_xticks(arms, [f"y{a}\ns={s:.3f}" for a, s in zip(arms, problem.scores, strict=True)])
    bars.set_ylabel("probability")
    bars.set_title(f"Policies (β = {problem.beta}, uniform πref)")
    bars.legend()
    for name, fit in fits.items():
        curves.semilogy(range(1, len(fit.kl_to_optimal) + 1), np.maximum(fit.kl_to_optimal, 1e-16), label=name.upper())
    curves.set_xlabel("L-BFGS iteration")
    curves.set_ylabel("KL(π* ‖ π_t)")
    curves.set_title("Training curves")
    curves.legend()
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "dpo_vs_ipo_bandit.png")
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)

    problem = BanditProblem()
    fits = {name: fit_policy(problem, name, args.iterations) for name in ("dpo", "ipo")}
    optimal = problem.optimal_policy()
    print(f"pi*      = {np.round(optimal.numpy(), 4)}")
    for name, fit in fits.items():
        kl = kl_divergence(optimal, fit.policy)
        print(f"pi_{name}   = {np.round(fit.policy.numpy(), 4)}  KL(pi*||pi_{name}) = {kl:.3e}")
    print(f"IPO closed-form fixed point = {np.round(problem.ipo_fixed_point().numpy(), 4)}")
    ratio = kl_divergence(optimal, fits["ipo"].policy) / max(kl_divergence(optimal, fits["dpo"].policy), 1e-300)
    print(f"KL ratio IPO/DPO = {ratio:.3e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(problem, fits, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
