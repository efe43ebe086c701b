"""A ridge-regularised linear (logistic) DPO fit by Newton's method: ADPO+'s offline plug-in estimate θ̂ on the
labels revealed so far, and the ensemble strategy's anchored heads.

Under a log-linear policy the DPO margin of pair i is h_i = θᵀφ_i and the DPO negative log-likelihood
of label s_i ∈ {+1 (y1 preferred), −1} is −log σ(s_i h_i). Its Hessian Σ μ_i(1 − μ_i) φ_iφ_iᵀ with
μ_i = σ(h_i) (:func:`~system.losses.logistic_curvature`) is the Fisher information that ADPO+ (ADPO paper;
docs/method.md, "ADPO+ weights") maximises, hence its weights μ(1 − μ).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from system.losses import logistic_curvature


def newton_direction(phi: Tensor, curvature: Tensor, gradient: Tensor, l2: float) -> Tensor:
    """(l2·I + Φᵀ diag(curvature) Φ)⁻¹ gradient for Φ [n, k], curvature [n] and gradient [k] (or [k, M]: M
    right-hand sides), solved in whichever of the n or k dimensions is smaller."""
    num_rows, dim = phi.shape
    if dim <= num_rows:
        hessian = phi.T @ (phi * curvature.unsqueeze(-1)) + l2 * torch.eye(dim, dtype=phi.dtype)
        return torch.linalg.solve(hessian, gradient)
    # Woodbury with B = diag(√curvature) Φ: (l2 I + BᵀB)⁻¹ g = (g − Bᵀ (l2 I + BBᵀ)⁻¹ B g) / l2.
    scaled = phi * curvature.sqrt().unsqueeze(-1)
    gram = scaled @ scaled.T + l2 * torch.eye(num_rows, dtype=phi.dtype)
    return (gradient - scaled.T @ torch.linalg.solve(gram, scaled @ gradient)) / l2


def fit_linear_dpo(
    phi: Tensor,
    prefer_first: Tensor,
    l2: float = 1.0,
    max_iter: int = 50,
    tol: float = 1e-9,
    init: Tensor | None = None,
    center: Tensor | None = None,
) -> Tensor:
    """θ̂ = argmin Σ_i −log σ(s_i θᵀφ_i) + (l2/2)‖θ − θ⁰‖² by damped Newton (float64), θ⁰ = ``center`` (default 0).

    Args:
        phi: [n, k] pair features φ_i = φ(x, y1) − φ(x, y2).
        prefer_first: [n] bool, True where y1 was preferred (s_i = +1).
        l2: ridge strength (> 0 keeps the problem strictly convex, also on separable labels).
        init: [k] starting point (the previous estimate when refitting after a few more labels: Newton then
            needs a step or two instead of starting from θ⁰); θ⁰ when None.
        center: [k] the prior mean θ⁰ the ridge pulls towards (an anchored ensemble head's random anchor).

    Returns:
        θ̂ [k] in float64 (θ⁰ when n = 0).
    """
    features = phi.to(torch.float64)
    signs = prefer_first.to(torch.float64) * 2.0 - 1.0
    anchor = torch.zeros(features.shape[1], dtype=torch.float64) if center is None else center.to(torch.float64)
    if features.shape[0] == 0:
        return anchor.clone()
    theta = (anchor if init is None else init.to(torch.float64)).clone()

    def evaluate(candidate: Tensor) -> tuple[float, Tensor]:
        """(objective, margins Φθ [n]) at θ = ``candidate``: the margins of an accepted step start the next one."""
        margins = features @ candidate
        return float(-logsigmoid(signs * margins).sum() + 0.5 * l2 * (candidate - anchor).square().sum()), margins

    current, margins = evaluate(theta)
    for _ in range(max_iter):
        prob_wrong = torch.sigmoid(-signs * margins)
        gradient = -(features.T @ (signs * prob_wrong)) + l2 * (theta - anchor)
        step = newton_direction(features, logistic_curvature(margins), gradient, l2)
        size = 1.0
        trial = theta - step
        value, trial_margins = evaluate(trial)
        while value > current and size > 1e-6:
            size *= 0.5
            trial = theta - size * step
            value, trial_margins = evaluate(trial)
        if value > current:
            break
        theta, margins, decrease, current = trial, trial_margins, current - value, value
        if decrease <= tol * max(1.0, abs(current)):
            break
    return theta
