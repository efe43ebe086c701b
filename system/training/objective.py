"""The per-batch preference objective shared by the single-process and the distributed trainers.

:func:`preference_loss` only calls ``model(...)`` forward, so ``model`` may be a plain module, a
``PeftModel`` or a DeepSpeed/DDP engine wrapping one. The reference log-probs come, in order of
preference, from the batch (precomputed offline), from an explicit ``reference_logps`` callable, or
from the same model with its adapters disabled. Which inputs a loss reads, and how it is called, is its
:class:`~system.losses.LossSpec`'s: reference-free losses (MPO) never touch πref.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from system.config import TrainConfig
from system.losses import LossSpec, PairLogps, get_loss, implicit_rewards
from system.models.logprobs import SequenceBatch, policy_and_reference_logps, sequence_logps
from system.training.batches import PreferenceBatch

ReferenceLogps = Callable[[SequenceBatch], Tensor]
"""Maps ``[2B, T]`` chosen-then-rejected rows to ``[2B]`` log πref(y|x) (no gradients)."""


def _reward_metrics(logps: PairLogps, beta: float) -> dict[str, float]:
    """Mean implicit rewards r = β·(log πθ − log πref) of chosen and rejected, their margin and its accuracy."""
    ref_chosen, ref_rejected = logps.reference_logps()
    chosen_rewards = implicit_rewards(logps.chosen, ref_chosen, beta)
    rejected_rewards = implicit_rewards(logps.rejected, ref_rejected, beta)
    margins = chosen_rewards - rejected_rewards
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margin": margins.mean().item(),
        "rewards/accuracy": (margins > 0).float().mean().item(),
    }


def _pair_prob_metrics(spec: LossSpec, logps: PairLogps, train_cfg: TrainConfig) -> dict[str, float]:
    """Mean pair probability μ of the policy and πp_ref's, the πref samples' log-prob, and how often μ > πp_ref."""
    ref_prob, sample_logps = logps.reference_samples()
    pair_prob = spec.pair_prob(logps, train_cfg)
    return {
        "pair_prob/policy": pair_prob.mean().item(),
        "pair_prob/reference": ref_prob.mean().item(),
        "ref_samples/logp": sample_logps.mean().item(),
        "rewards/accuracy": (pair_prob > ref_prob).float().mean().item(),
    }


def _pair_logps(
    model: torch.nn.Module,
    batch: PreferenceBatch,
    spec: LossSpec,
    length_normalize: bool,
    reference_logps: ReferenceLogps | None,
) -> PairLogps:
    """One policy forward over the batch's rows, and the reference inputs ``spec.reference`` names."""
    pairs = batch.num_pairs
    if spec.reference == "samples":
        if batch.ref_pair_prob_chosen is None or batch.samples_per_pair == 0:
            raise ValueError(f"train.loss={spec.name} needs ref_pair_prob_chosen and πref samples in the batch")
        logps = sequence_logps(model, batch.sequences, length_normalize)
        return PairLogps(
            logps[:pairs], logps[pairs : 2 * pairs], ref_pair_prob_chosen=batch.ref_pair_prob_chosen,
            ref_sample_logps=logps[2 * pairs :].view(pairs, batch.samples_per_pair),
        )
    if batch.ref_chosen_logps is not None and batch.ref_rejected_logps is not None:
        logps = sequence_logps(model, batch.pair_sequences, length_normalize)
        ref_chosen, ref_rejected = batch.ref_chosen_logps, batch.ref_rejected_logps
    elif reference_logps is not None:
        logps = sequence_logps(model, batch.pair_sequences, length_normalize)
        with torch.no_grad():
            ref_chosen, ref_rejected = reference_logps(batch.pair_sequences).detach().split(pairs)
    else:
        logps, ref_logps = policy_and_reference_logps(model, batch.pair_sequences, length_normalize)
        ref_chosen, ref_rejected = ref_logps.split(pairs)
    chosen, rejected = logps.split(pairs)
    return PairLogps(chosen, rejected, ref_chosen, ref_rejected)


def preference_loss(
    model: torch.nn.Module,
    batch: PreferenceBatch,
    train_cfg: TrainConfig,
    length_normalize: bool = False,
    reference_logps: ReferenceLogps | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Mean preference loss of one batch: :func:`preference_losses` averaged over its B pairs."""
    losses, metrics = preference_losses(model, batch, train_cfg, length_normalize, reference_logps)
    return losses.mean(), metrics


def preference_losses(
    model: torch.nn.Module,
    batch: PreferenceBatch,
    train_cfg: TrainConfig,
    length_normalize: bool = False,
    reference_logps: ReferenceLogps | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Per-pair preference losses of one batch under ``train.loss``, and mean metrics for logging.

    One policy forward scores all rows (chosen, rejected, MPO's πref samples). For DPO/IPO the
    reference log-probs are the batch's precomputed ones, else ``reference_logps(batch.pair_sequences)``,
    else the model itself with adapters disabled (one no-grad forward). For MPO the precomputed
    πp_ref and the samples replace the reference model entirely.

    Args:
        model: the policy's forward (plain, peft, or an engine wrapping a peft model).
        batch: from :func:`~system.training.batches.collate_preferences`, on the model's device.
        train_cfg: ``train`` section (loss name, β, τ, label smoothing).
        length_normalize: divide each log π(y|x) by |y|.
        reference_logps: optional callable giving ``[2B]`` reference log-probs of the pair rows.

    Returns:
        ``(losses, metrics)``: the ``[B]`` per-pair losses (differentiable; the caller reduces them) and
        float means over the batch (``loss``, implicit rewards, margin and accuracy, or MPO's pair probabilities).
    """
    spec = get_loss(train_cfg.loss)
    logps = _pair_logps(model, batch, spec, length_normalize, reference_logps)
    losses = spec.per_pair(logps, train_cfg)
    with torch.no_grad():
        metrics = (_reward_metrics(logps, train_cfg.beta) if spec.reference == "logps"
                   else _pair_prob_metrics(spec, logps, train_cfg))
    metrics["loss"] = losses.mean().item()
    return losses, metrics
