"""Preference losses (DPO, IPO, MPO) as pure functions of sequence log-probs.

Every loss takes ``[B]``-shaped tensors of sequence log-probs log π(y|x) (summed, or length-normalised by the
caller, over response tokens) and returns the **unreduced** per-pair loss ``[B]``; the caller takes the mean.
Notation (docs/method.md, "Log-probabilities and the implicit reward"):
implicit reward r_θ(x,y) = β·(log πθ(y|x) − log πref(y|x)),
margin h = r_θ(x,y_w) − r_θ(x,y_l), log-ratio margin Δ = h/β.

Numerics: sigmoids are only ever taken in log space (``logsigmoid``), so the losses and their gradients stay
finite for margins up to ±1e4 in float32 and bfloat16. Losses are computed in the dtype of the inputs.

Registry: each loss is registered once (:func:`register_loss`) as a :class:`LossSpec` that carries everything
that depends on it — its inputs from πref, its margin and pair probability, its curvature — so adding a loss
touches only the place that registers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

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


def logistic_curvature(margins: Tensor) -> Tensor:
    """d²/dh² of the logistic loss −log σ(h): μ(1 − μ) = σ(h)·σ(−h), μ = σ(h), for margins h [N] → [N] in (0, 1/4].

    The Fisher information of the Bernoulli preference σ(h), hence ADPO+'s weights (seed 000). Written as
    σ(h)σ(−h): 1 − σ(h) rounds to 0 in float64 for h > 37, which would block confident pairs as zero-norm rows;
    σ(−h) stays positive up to h ≈ 745.
    """
    return torch.sigmoid(margins) * torch.sigmoid(-margins)


@dataclass(frozen=True)
class PairLogps:
    """What a registered loss reads for B pairs — one calling convention for every loss (:attr:`LossSpec.per_pair`).

    "Chosen" and "rejected" are the first and second response of a pair (y_w, y_l once labelled; y1, y2 of an
    unlabelled candidate pair when a feature worker asks for the pair probability).

    Attributes:
        chosen: ``[B]`` log πθ(y_w|x) (differentiable in training).
        rejected: ``[B]`` log πθ(y_l|x).
        ref_chosen: ``[B]`` log πref(y_w|x); given when the loss's ``reference`` is ``"logps"``.
        ref_rejected: ``[B]`` log πref(y_l|x); likewise.
        ref_pair_prob_chosen: ``[B]`` πp_ref(y_w≻y_l|x); given in training when ``reference`` is ``"samples"``.
        ref_sample_logps: ``[B, S]`` log πθ(y_s|x) on S samples y_s ∼ πref(·|x); likewise.
    """

    chosen: Tensor
    rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    ref_pair_prob_chosen: Tensor | None = None
    ref_sample_logps: Tensor | None = None

    def reference_logps(self) -> tuple[Tensor, Tensor]:
        """(log πref(y_w|x), log πref(y_l|x)), each ``[B]``; ValueError when they were not given."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("this loss needs the reference log-probs log πref(y|x) of both responses")
        return self.ref_chosen, self.ref_rejected

    def reference_samples(self) -> tuple[Tensor, Tensor]:
        """(πp_ref(y_w≻y_l|x) ``[B]``, log πθ of the πref samples ``[B, S]``); ValueError when not given."""
        if self.ref_pair_prob_chosen is None or self.ref_sample_logps is None:
            raise ValueError("this loss needs ref_pair_prob_chosen and the πref samples' log-probs")
        return self.ref_pair_prob_chosen, self.ref_sample_logps


class LossSettings(Protocol):
    """What a loss reads from the ``train`` config section (:class:`system.config.TrainConfig` has it); a protocol,
    so this module imports no config (the config asks the losses for their specs)."""

    @property
    def beta(self) -> float: ...

    @property
    def label_smoothing(self) -> float: ...

    @property
    def tau(self) -> float: ...


PairFunction = Callable[[PairLogps, "LossSettings"], Tensor]
"""``(pair log-probs, train section) → [B]``: how a registered loss computes a per-pair quantity."""

Reference = Literal["logps", "samples"]
Curvature = Literal["logistic", "constant"]


@dataclass(frozen=True)
class LossSpec:
    """A registered preference loss, with everything that depends on which loss is trained.

    Callers ask the spec instead of comparing loss names: the trainer (which reference data to prepare and
    feed), the loop (whether to draw πref samples), the feature workers (ADPO+'s plug-in margin and weight)
    and the config (whether ADPO+ applies).

    Attributes:
        name: registry key (``train.loss``).
        fn: the loss function, in its own documented signature (for direct use).
        per_pair: the per-pair loss ``[B]`` in the one calling convention, reading the :class:`PairLogps` fields
            its ``reference`` names and its hyperparameters from the ``train`` section.
        margin: the pair's margin h ``[B]`` under the trained model — the quantity the loss is a function of
            (DPO and IPO: the implicit-reward margin β·Δ; MPO: the pair policy's logit log πθ(y1) − log πθ(y2)),
            from which :meth:`pair_prob` gives μ.
        reference: what the loss reads from πref. ``"logps"``: log πref of both responses, computed once before
            training (or by a reference forward in the step); the margin needs them too. ``"samples"``:
            πp_ref(y_w≻y_l|x) and responses sampled from πref (MPO), prepared once before training, so training
            and the margin run no reference pass.
        curvature: ∂²loss/∂h² as a function of the margin. ``"logistic"``: the loss is −log σ(h) (up to
            smoothing and KL terms) and its curvature μ(1−μ), μ = σ(h), is the Fisher information ADPO+ weights
            pairs by; ``"constant"``: a squared loss ∝ (h − 1/2)² (IPO), whose curvature is the same for every
            pair — ADPO+ then equals ADPO, and the config refuses it.
    """

    name: str
    fn: Callable[..., Tensor]
    per_pair: PairFunction
    margin: PairFunction
    reference: Reference
    curvature: Curvature

    @property
    def reference_free(self) -> bool:
        """True when training runs no reference forward pass and needs no reference log-probs (MPO)."""
        return self.reference != "logps"

    def pair_prob(self, logps: PairLogps, train: LossSettings) -> Tensor:
        """μ = P(y1 ≻ y2 | x) ``[B]`` that the trained model implies: σ(h) for a logistic loss; for a squared loss
        (h − 1/2)², whose expected value under labels with P(y1≻y2) = μ is smallest at h = μ − 1/2, μ = 1/2 + h
        clipped to [0, 1]."""
        margins = self.margin(logps, train)
        if self.curvature == "logistic":
            return torch.sigmoid(margins)
        return (0.5 + margins).clamp(0.0, 1.0)

    def curvature_weights(self, margins: Tensor) -> Tensor:
        """ADPO+'s weight per pair from margins h ``[N]``: μ(1 − μ) (:func:`logistic_curvature`) for a logistic loss,
        1 for a constant-curvature one."""
        if self.curvature == "logistic":
            return logistic_curvature(margins)
        return torch.ones_like(margins)


def _dpo(logps: PairLogps, train: LossSettings) -> Tensor:
    return dpo_loss(logps.chosen, logps.rejected, *logps.reference_logps(), train.beta, train.label_smoothing)


def _ipo(logps: PairLogps, train: LossSettings) -> Tensor:
    return ipo_loss(logps.chosen, logps.rejected, *logps.reference_logps(), train.beta)


def _mpo(logps: PairLogps, train: LossSettings) -> Tensor:
    return mpo_loss(logps.chosen, logps.rejected, *logps.reference_samples(), train.beta, train.tau)


def implicit_reward_margin(logps: PairLogps, train: LossSettings) -> Tensor:
    """h = r_θ(x,y_w) − r_θ(x,y_l) = β·Δ ``[B]``: the margin of DPO and IPO."""
    return train.beta * _logratio_margin(logps.chosen, logps.rejected, *logps.reference_logps())


def pair_policy_logit(logps: PairLogps, train: LossSettings) -> Tensor:
    """h = log πθ(y_w|x) − log πθ(y_l|x) ``[B]``: the logit of MPO's pair policy σ(h), no β, no reference."""
    del train
    return logps.chosen - logps.rejected


LOSSES: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec) -> LossSpec:
    """Add ``spec`` to the registry under ``spec.name`` (the one place a new loss is added); returns it."""
    if spec.name in LOSSES and LOSSES[spec.name] != spec:
        raise ConfigError(f"train.loss: loss {spec.name!r} is registered twice")
    LOSSES[spec.name] = spec
    return spec


register_loss(LossSpec("dpo", dpo_loss, _dpo, implicit_reward_margin, reference="logps", curvature="logistic"))
register_loss(LossSpec("ipo", ipo_loss, _ipo, implicit_reward_margin, reference="logps", curvature="constant"))
register_loss(LossSpec("mpo", mpo_loss, _mpo, pair_policy_logit, reference="samples", curvature="logistic"))


def get_loss(name: str) -> LossSpec:
    """The registered loss called ``name``; raises ConfigError naming ``train.loss`` when unknown."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"train.loss: unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
