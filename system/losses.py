"""Preference losses (DPO, IPO, MPO) as pure functions of sequence log-probs.

Every loss takes ``[B]``-shaped tensors of sequence log-probs log π(y|x) (summed, or length-normalised by the
caller, over response tokens) and returns the **unreduced** per-pair loss ``[B]``; the caller takes the mean.
Notation (docs/method.md, "Log-probabilities and the implicit reward"):
implicit reward r_θ(x,y) = β·(log πθ(y|x) − log πref(y|x)),
margin h = r_θ(x,y_w) − r_θ(x,y_l), log-ratio margin Δ = h/β.

Numerics: sigmoids are only ever taken in log space (``logsigmoid``), so the losses and their gradients stay
finite for margins up to ±1e4 in float32 and bfloat16. Losses are computed in the dtype of the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from system.errors import ConfigError


def implicit_rewards(policy_logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """Implicit reward r_θ(x,y) = β·(log πθ(y|x) − log πref(y|x)).

    Args:
        policy_logps: ``[B]`` log πθ(y|x).
        ref_logps: ``[B]`` log πref(y|x).
        beta: KL-regularisation strength β > 0.

    Returns:
        ``[B]`` rewards; differentiable w.r.t. ``policy_logps`` (detach them for logging).
    """
    return beta * (policy_logps - ref_logps)


def _logratio_margin(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor
) -> Tensor:
    """Δ = (log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l)), shape ``[B]``."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """DPO loss (Rafailov et al. 2023) with conservative label smoothing (cDPO).

    ``loss = −(1−ε)·log σ(h) − ε·log σ(−h)`` with h = β·Δ. ε is the assumed probability that a label is
    flipped; ε = 0 is plain DPO. Equals TRL's ``loss_type="sigmoid"`` for ε = 0.

    Args:
        policy_chosen_logps: ``[B]`` log πθ(y_w|x).
        policy_rejected_logps: ``[B]`` log πθ(y_l|x).
        ref_chosen_logps: ``[B]`` log πref(y_w|x).
        ref_rejected_logps: ``[B]`` log πref(y_l|x).
        beta: β > 0.
        label_smoothing: ε ∈ [0, 0.5).

    Returns:
        ``[B]`` per-pair loss.
    """
    margin = beta * _logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -F.logsigmoid(margin)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-margin)
    return loss


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """IPO loss (Azar et al. 2023, Eq. 17) in TRL's convention.

    ``loss = (Δ − 1/(2β))² = (h/β − 1/(2β))²``, β playing the role of IPO's τ. The DPO-vs-IPO note writes
    ``(q_w − q_l − 1/2)²`` with q = β·log(πθ/πref), i.e. ``(βΔ − 1/2)² = β²·(Δ − 1/(2β))²``: the same minimiser,
    a loss (and gradient) scaled by β². We follow TRL so that values and learning rates transfer.

    TRL's trainer divides each log-ratio by the number of response tokens before this formula; pass
    length-normalised log-probs to reproduce TRL's training exactly.

    Args:
        policy_chosen_logps: ``[B]`` log πθ(y_w|x).
        policy_rejected_logps: ``[B]`` log πθ(y_l|x).
        ref_chosen_logps: ``[B]`` log πref(y_w|x).
        ref_rejected_logps: ``[B]`` log πref(y_l|x).
        beta: β (IPO's τ) > 0.

    Returns:
        ``[B]`` per-pair loss.
    """
    margin = _logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (margin - 1.0 / (2.0 * beta)) ** 2


def pair_preference_prob(chosen_logps: Tensor, rejected_logps: Tensor) -> Tensor:
    """MPO's pair-wise policy πp(y_w≻y_l|x) = σ(log π(y_w|x) − log π(y_l|x)), shape ``[B]``.

    Use it with reference log-probs to precompute ``ref_pair_prob_chosen`` for :func:`mpo_loss`.
    """
    return torch.sigmoid(chosen_logps - rejected_logps)


def mpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_pair_prob_chosen: Tensor,
    policy_ref_sample_logps: Tensor,
    beta: float,
    tau: float,
) -> Tensor:
    """MPO loss (*Preference as Reward, Maximum Preference Optimization with Importance Sampling*, arXiv:2312.16430);
    no reference model needed.

    With d = log πθ(y_w|x) − log πθ(y_l|x), pair policy p = πp_θ(y_w≻y_l|x) = σ(d) and p_ref = πp_ref(y_w≻y_l|x)::

        L = −p + β·[p·log(p/p_ref) + (1−p)·log((1−p)/(1−p_ref))] − τ·mean_s log πθ(y_s|x),   y_s ∼ πref(·|x)

    Terms, as implemented:

    1. Preference maximisation −E_{a∼πp_θ}[I(a)], I = 1 for the observed ordering y_w≻y_l and 0 for y_l≻y_w.
       Rewritten with importance sampling from the uniform behaviour policy πp(a|x) = 1/2, which "generates"
       both orderings of every stored pair: Σ_a ½·(πp_θ(a)/½)·I(a) = p. The ½ and the 1/½ weight cancel and the
       two-outcome sum is exact, so the term is −p. (With I ∈ {+1, −1} instead the term is −(2p−1): the same
       loss with β and τ halved.)
    2. Pair-wise KL(πp_θ ‖ πp_ref) over the two orderings, weighted by β; computed from ``logsigmoid(±d)``.
    3. Point-wise KL(πref ‖ πθ) = E_{πref}[log πref − log πθ]; its πref part is constant in θ and dropped,
       leaving −τ·E_{y∼D_ref(x)}[log πθ(y|x)] estimated on samples pre-generated from πref.

    Per pair, ∂L/∂d = p(1−p)·[β·(d − logit p_ref) − 1]: the loss raises πp_θ(y_w≻y_l) from p_ref towards
    the stationary point d* = logit(p_ref) + 1/β (τ = 0).

    Args:
        policy_chosen_logps: ``[B]`` log πθ(y_w|x).
        policy_rejected_logps: ``[B]`` log πθ(y_l|x).
        ref_pair_prob_chosen: ``[B]`` p_ref = σ(log πref(y_w|x) − log πref(y_l|x)), precomputed offline (see
            :func:`pair_preference_prob`); clamped to [eps, 1−eps] of its dtype so that log p_ref stays finite.
        policy_ref_sample_logps: ``[B]`` or ``[B, S]`` log πθ(y_s|x) on S samples y_s ∼ πref(·|x) per prompt;
            averaged over S.
        beta: weight β ≥ 0 of the pair-wise KL.
        tau: weight τ ≥ 0 of the point-wise KL.

    Returns:
        ``[B]`` per-pair loss.
    """
    logit = policy_chosen_logps - policy_rejected_logps
    log_p = F.logsigmoid(logit)
    log_not_p = F.logsigmoid(-logit)
    prob_chosen = torch.exp(log_p)
    eps = torch.finfo(ref_pair_prob_chosen.dtype).eps
    ref_prob = ref_pair_prob_chosen.clamp(eps, 1.0 - eps)
    pair_kl = prob_chosen * (log_p - torch.log(ref_prob)) + (1.0 - prob_chosen) * (log_not_p - torch.log1p(-ref_prob))
    sample_logps = policy_ref_sample_logps if policy_ref_sample_logps.dim() == 1 else policy_ref_sample_logps.mean(-1)
    return -prob_chosen + beta * pair_kl - tau * sample_logps


@dataclass(frozen=True)
class LossSpec:
    """A registered preference loss.

    Attributes:
        name: registry key (``train.loss``).
        fn: the loss function; reference-based losses take
            ``(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, ...)``, reference-free ones
            ``(policy_chosen, policy_rejected, ref_pair_prob_chosen, policy_ref_sample_logps, beta, tau)``.
        reference_free: True when training needs no reference forward pass (MPO).
    """

    name: str
    fn: Callable[..., Tensor]
    reference_free: bool


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("dpo", dpo_loss, reference_free=False),
        LossSpec("ipo", ipo_loss, reference_free=False),
        LossSpec("mpo", mpo_loss, reference_free=True),
    )
}


def get_loss(name: str) -> LossSpec:
    """The registered loss called ``name``; raises ConfigError naming ``train.loss`` when unknown."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"train.loss: unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
