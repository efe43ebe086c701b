"""The per-batch preference objective shared by the single-process and the distributed trainers.

:func:`preference_loss` only calls ``model(...)`` forward, so ``model`` may be a plain module, a
``PeftModel`` or a DeepSpeed/DDP engine wrapping one. The reference log-probs come, in order of
preference, from the batch (precomputed offline), from an explicit ``reference_logps`` callable, or
from the same model with its adapters disabled. Reference-free losses (MPO) never touch πref.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from system.config import TrainConfig
from system.losses import LossSpec, get_loss, implicit_rewards
from system.models.logprobs import SequenceBatch, policy_and_reference_logps, sequence_logps
from system.training.batches import PreferenceBatch

ReferenceLogps = Callable[[SequenceBatch], Tensor]
"""Maps ``[2B, T]`` chosen-then-rejected rows to ``[2B]`` log πref(y|x) (no gradients)."""


def _reference_loss(
    spec: LossSpec,
    chosen: Tensor,
    rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    train_cfg: TrainConfig,
) -> tuple[Tensor, dict[str, float]]:
    options = {}
    if "label_smoothing" in inspect.signature(spec.fn).parameters:
        options["label_smoothing"] = train_cfg.label_smoothing
    losses = spec.fn(chosen, rejected, ref_chosen, ref_rejected, train_cfg.beta, **options)
    with torch.no_grad():
        chosen_rewards = implicit_rewards(chosen, ref_chosen, train_cfg.beta)
        rejected_rewards = implicit_rewards(rejected, ref_rejected, train_cfg.beta)
        margins = chosen_rewards - rejected_rewards
        metrics = {
            "rewards/chosen": chosen_rewards.mean().item(),
            "rewards/rejected": rejected_rewards.mean().item(),
            "rewards/margin": margins.mean().item(),
            "rewards/accuracy": (margins > 0).float().mean().item(),
        }
    return losses, metrics


def _reference_free_loss(
    spec: LossSpec, chosen: Tensor, rejected: Tensor, sample_logps: Tensor, batch: PreferenceBatch, cfg: TrainConfig
) -> tuple[Tensor, dict[str, float]]:
    if batch.ref_pair_prob_chosen is None or batch.samples_per_pair == 0:
        raise ValueError(f"train.loss={spec.name} needs ref_pair_prob_chosen and πref samples in the batch")
    losses = spec.fn(chosen, rejected, batch.ref_pair_prob_chosen, sample_logps, cfg.beta, cfg.tau)
    with torch.no_grad():
        pair_prob = torch.sigmoid(chosen - rejected)
        metrics = {
            "pair_prob/policy": pair_prob.mean().item(),
            "pair_prob/reference": batch.ref_pair_prob_chosen.mean().item(),
            "ref_samples/logp": sample_logps.mean().item(),
            "rewards/accuracy": (pair_prob > batch.ref_pair_prob_chosen).float().mean().item(),
        }
    return losses, metrics


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
    pairs = batch.num_pairs
    if spec.reference_free:
        logps = sequence_logps(model, batch.sequences, length_normalize)
        sample_logps = logps[2 * pairs :].view(pairs, batch.samples_per_pair)
        chosen, rejected = logps[:pairs], logps[pairs : 2 * pairs]
        losses, metrics = _reference_free_loss(spec, chosen, rejected, sample_logps, batch, train_cfg)
    else:
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
        losses, metrics = _reference_loss(spec, chosen, rejected, ref_chosen, ref_rejected, train_cfg)
    metrics["loss"] = losses.mean().item()
    return losses, metrics
