"""Preference training (DPO, IPO, MPO) with LoRA or full weights: the core the distributed trainer reuses."""

from system.training.batches import PreferenceBatch, collate_preferences
from system.training.loop import (
    TrainResult,
    epoch_batches,
    fit_preferences,
    make_batch,
    sft_warmup,
    train_preferences,
)
from system.training.objective import preference_loss, preference_losses
from system.training.reference import MpoReference, prepare_mpo_reference, prompt_key, reference_pair_logps

__all__ = [
    "MpoReference",
    "PreferenceBatch",
    "TrainResult",
    "collate_preferences",
    "epoch_batches",
    "fit_preferences",
    "make_batch",
    "preference_loss",
    "preference_losses",
    "prepare_mpo_reference",
    "prompt_key",
    "reference_pair_logps",
    "sft_warmup",
    "train_preferences",
]
