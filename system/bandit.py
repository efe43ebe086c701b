"""The DPO-vs-IPO K-armed bandit (docs/method.md, "Losses"): where DPO and IPO converge on exact,
noise-free preference data.

Arms y_0..y_{K−1} with scores s, reference policy πref (the pair-sampling distribution μ as well) and
Bradley–Terry labels P(y_a ≻ y_b) = σ(s_a − s_b). The policy is a softmax over a logit vector, so every
log π(y) is exact and the expected loss over all ordered pairs (a, b), a ≠ b, weighted by
μ(a)·μ(b)·P(y_a ≻ y_b), is a smooth function of K numbers that full-batch L-BFGS minimises.

Closed-form fixed points (g = log π − log πref, up to a constant):
- DPO: the BT likelihood is maximised when β·(g_a − g_b) = s_a − s_b, so π_DPO = π* ∝ πref·exp(s/β).
- IPO (TRL's (Δ − 1/(2β))²): for a pair the best Δ_ab is (P(a≻b) − ½)/β; the weighted least-squares fit of
  g_a − g_b to it gives g_a = P(a≻μ)/β + const with P(a≻μ) = Σ_b μ_b·P(a≻b), so π_IPO ∝ πref·exp(P(a≻μ)/β).
  P(a≻μ) ∈ [0, 1] squashes the scores, which is why IPO misses π* (the DPO-vs-IPO note's bandit, s = [10, 9.593, 7.8]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from system.config import TrainConfig
from system.losses import PairLogps, get_loss

SEED_003_SCORES = (10.000, 9.593, 7.800)


def kl_divergence(p: Tensor, q: Tensor) -> float:
    """KL(p ‖ q) = Σ p·log(p/q) for probability vectors ``[K]``."""
    return float((p * (p.log() - q.log())).sum())


@dataclass(frozen=True)
class BanditProblem:
    """Arm scores ``[K]`` (BT utilities), β, and πref (uniform when ``None``); float64 throughout."""

    scores: tuple[float, ...] = SEED_003_SCORES
    beta: float = 1.0
    ref_probs: tuple[float, ...] | None = None

    @property
    def ref(self) -> Tensor:
        """πref ``[K]``, also the distribution each arm of a pair is drawn from."""
        k = len(self.scores)
        probs = self.ref_probs if self.ref_probs is not None else (1.0 / k,) * k
        return torch.tensor(probs, dtype=torch.float64)

    @property
    def score_tensor(self) -> Tensor:
        return torch.tensor(self.scores, dtype=torch.float64)

    def win_probs(self) -> Tensor:
        """``[K, K]`` Bradley–Terry P(y_a ≻ y_b) = σ(s_a − s_b); ½ on the diagonal."""
        s = self.score_tensor
        return torch.sigmoid(s[:, None] - s[None, :])

    def optimal_policy(self) -> Tensor:
        """π* ∝ πref·exp(s/β), the KL-regularised reward maximiser (DPO paper, Eq. 4)."""
        return torch.softmax(self.ref.log() + self.score_tensor / self.beta, dim=0)

    def ipo_fixed_point(self) -> Tensor:
        """π_IPO ∝ πref·exp(P(y≻μ)/β), the minimiser of the expected IPO loss (module docstring)."""
        win_vs_mu = self.win_probs() @ self.ref
        return torch.softmax(self.ref.log() + win_vs_mu / self.beta, dim=0)

    def expected_loss(self, loss_name: str, logits: Tensor) -> Tensor:
        """Exact expected per-pair loss of the softmax policy with ``logits`` ``[K]`` (scalar).

        Σ over ordered pairs (a, b), a ≠ b, of μ(a)·μ(b)·P(a≻b)·loss(chosen=a, rejected=b); pairs of the same
        arm have Δ = 0 and a constant loss, so they are left out.
        """
        k = len(self.scores)
        chosen, rejected = (idx.flatten() for idx in torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij"))
        distinct = chosen != rejected
        chosen, rejected = chosen[distinct], rejected[distinct]
        weights = self.ref[chosen] * self.ref[rejected] * self.win_probs()[chosen, rejected]
        policy_logps = torch.log_softmax(logits, dim=0)
        ref_logps = self.ref.log()
        logps = PairLogps(policy_logps[chosen], policy_logps[rejected], ref_logps[chosen], ref_logps[rejected])
        per_pair = get_loss(loss_name).per_pair(logps, TrainConfig(loss=loss_name, beta=self.beta))
        return (weights * per_pair).sum()


@dataclass
class BanditFit:
    """A fitted softmax policy ``[K]`` and KL(π*‖π_t) after each L-BFGS iteration."""

    policy: Tensor
    kl_to_optimal: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def fit_policy(problem: BanditProblem, loss_name: str, iterations: int = 100) -> BanditFit:
    """Minimise the expected ``loss_name`` loss from π = πref with full-batch L-BFGS (strong Wolfe)."""
    logits = problem.ref.log().clone().requires_grad_()
    optimizer = torch.optim.LBFGS([logits], lr=1.0, max_iter=1, line_search_fn="strong_wolfe")
    target = problem.optimal_policy()
    fit = BanditFit(policy=torch.softmax(logits.detach(), dim=0))

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = problem.expected_loss(loss_name, logits)
        loss.backward()
        return loss

    for _ in range(iterations):
        loss = optimizer.step(closure)
        fit.losses.append(float(loss.detach()) if loss is not None else float("nan"))
        fit.policy = torch.softmax(logits.detach(), dim=0)
        fit.kl_to_optimal.append(kl_divergence(target, fit.policy))
    return fit
