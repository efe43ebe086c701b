"""Preference training on one rank: offline reference pass, optional SFT warm-up, epochs of DPO/IPO/MPO.

:func:`fit_preferences` is the whole procedure a rank runs, in one process (world size 1) or as a Ray
Train worker (:mod:`actors.trainer_rank`): the same data order (:func:`epoch_batches`), collation
(:func:`make_batch`), objective, epoch runner (:mod:`system.training.runner`), engines
(:mod:`system.training.engine`) and checkpoints (:mod:`system.training.checkpoint`).
:func:`train_preferences` is its single-process form.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.errors import DataError
from system.losses import get_loss
from system.models.logprobs import encode_sequences, token_logps
from system.training.batches import PreferenceBatch, collate_preferences
from system.training.checkpoint import (
    PROGRESS_FILE,
    Publish,
    directory_publisher,
    read_checkpoint,
    write_checkpoint,
)
from system.training.engine import TorchEngine, TrainEngine, build_engine
from system.training.objective import preference_losses
from system.training.reference import MpoReference, prepare_mpo_reference, reference_pair_logps
from system.training.runner import MetricTally, TrainProgress, run_epochs
from system.types import PreferencePair

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
ADAPTER_DIR = "adapter"

OfflineReference = Tensor | MpoReference
"""``[N, 2]`` reference log-probs (DPO/IPO) or MPO's reference data, aligned with the training pairs."""

EpochCallback = Callable[[int, dict[str, float]], None]
EngineFactory = Callable[[torch.nn.Module], TrainEngine]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_preferences`.

    Attributes:
        adapter_dir: the trained weights (peft adapter, or a full checkpoint without LoRA).
        epochs_completed: epochs done in total, including those of a resumed run.
        optimizer_steps: optimizer updates in total.
        epoch_metrics: global mean metrics per epoch (``epoch``, ``loss``, rewards/margins or MPO pair probabilities).
    """

    adapter_dir: Path
    epochs_completed: int
    optimizer_steps: int
    epoch_metrics: tuple[dict[str, float], ...]

    @property
    def final_loss(self) -> float:
        """Mean loss of the last epoch."""
        return self.epoch_metrics[-1]["loss"]


def epoch_batches(num_pairs: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The pair indices of each batch of ``epoch``: a permutation that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_pairs, generator=generator).tolist()
    return [order[start : start + batch_size] for start in range(0, num_pairs, batch_size)]


def make_batch(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    indices: Sequence[int],
    cfg: Config,
    reference: OfflineReference | None,
) -> PreferenceBatch:
    """Collate the pairs at ``indices`` with their slice of the offline reference data."""
    batch_pairs = [pairs[i] for i in indices]
    if isinstance(reference, MpoReference):
        mpo = reference.subset(indices)
        pair_prob = torch.tensor(mpo.pair_prob_chosen)
        return collate_preferences(
            tokenizer, batch_pairs, cfg.model, ref_pair_prob_chosen=pair_prob, ref_samples=mpo.samples
        )
    ref_logps = None if reference is None else reference[list(indices)]
    return collate_preferences(tokenizer, batch_pairs, cfg.model, ref_logps=ref_logps)


def offline_reference(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    cfg: Config,
    known_samples: Mapping[str, Sequence[str]] | None = None,
) -> OfflineReference:
    """Everything the loss needs from πref, computed once: MPO's data (reusing ``known_samples`` of
    D_ref(x) by prompt key) or ``[N, 2]`` reference log-probs, as the loss's ``reference`` names."""
    if get_loss(cfg.train.loss).reference == "samples":
        return prepare_mpo_reference(model, tokenizer, pairs, cfg, known_samples)
    return reference_pair_logps(model, tokenizer, pairs, cfg.model, cfg.train.batch_size)


def _broadcast(value: Any, world_size: int) -> Any:
    """Rank 0's ``value`` on every rank (unchanged at world size 1)."""
    if world_size == 1:
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def sft_warmup(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair], cfg: Config
) -> list[dict[str, float]]:
    """Supervised warm-up on the chosen responses: minimise the mean over pairs of each response's mean
    token NLL −(1/|y_w|)·Σ_t log π(y_w,t | x, y_w,<t).

    Runs ``train.sft_warmup.epochs`` epochs at ``train.sft_warmup.lr`` with its own AdamW (discarded after),
    in this process only (the same on every rank: same pairs, same seed), through the epoch runner.

    Returns:
        The metrics of every epoch.
    """
    warmup, train_cfg = cfg.train.sft_warmup, cfg.train
    device = next(model.parameters()).device
    engine = TorchEngine(model, warmup.lr, train_cfg.weight_decay, train_cfg.max_grad_norm, distributed=False)
    model.train()

    def nll(indices: Sequence[int]) -> tuple[Tensor, dict[str, float]]:
        batch = encode_sequences(
            tokenizer, [pairs[i].prompt for i in indices], [pairs[i].chosen for i in indices], cfg.model
        ).to(device)
        losses = -token_logps(model, batch).sum(-1) / batch.response_mask.sum(-1).clamp(min=1)
        return losses, {"loss": losses.mean().item()}

    progress = run_epochs(
        engine, nll, lambda epoch: epoch_batches(len(pairs), train_cfg.batch_size, train_cfg.seed, -1 - epoch),
        warmup.epochs, train_cfg.grad_accum_steps, TrainProgress(), MetricTally(), device=device,
        on_epoch_end=lambda epoch, metrics: logger.info("SFT warm-up epoch %d: loss %.4f", epoch, metrics["loss"]),
    )
    return progress.epoch_metrics


def fit_preferences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    cfg: Config,
    publish: Publish,
    resume_from: Path | None = None,
    *,
    make_engine: EngineFactory | None = None,
    known_samples: Mapping[str, Sequence[str]] | None = None,
    rank: int = 0,
    world_size: int = 1,
    checkpoint_every_steps: int = 0,
    on_epoch_end: EpochCallback | None = None,
) -> tuple[TrainEngine, TrainProgress]:
    """Train the policy on preference pairs with ``train.loss`` (DPO, IPO or MPO) for ``train.epochs`` epochs.

    On a fresh start πref's contribution is computed once by rank 0 and broadcast (reference log-probs,
    or MPO's pair probabilities and samples, reusing ``known_samples`` of D_ref(x) by prompt key), then
    the optional SFT warm-up runs on every rank and rank 0's weights are broadcast. The engine (DeepSpeed
    or PyTorch/DDP by ``train.deepspeed.enabled`` unless ``make_engine`` is given) then runs the epochs:
    each visits the pairs in an order fixed by (``train.seed``, epoch), in global batches of
    ``train.batch_size`` pairs split across ranks, one AdamW step per ``train.grad_accum_steps`` batches
    on the global mean loss with gradient clipping. Checkpoints (every epoch and every
    ``checkpoint_every_steps`` steps) go through ``publish``; ``resume_from`` restores one (weights,
    optimizer, RNG, data position, metric tallies) and training continues bit for bit as if uninterrupted.

    Args:
        model: the policy from :func:`~system.models.loading.load_policy` (trainable), on its device.
        tokenizer: its tokenizer.
        pairs: labelled pairs (chosen ≻ rejected), the same on every rank.
        cfg: the whole config (``train`` for the optimisation, ``model`` for lengths, ``generation`` for
            MPO's reference samples).
        publish: commits a staged checkpoint directory (:func:`~system.training.checkpoint.directory_publisher`
            in one process, ``ray.train.report`` under Ray Train).
        resume_from: a checkpoint directory to continue from.
        make_engine: builds the engine around the model (default :func:`~system.training.engine.build_engine`).
        known_samples: MPO's reference samples already drawn, by prompt key.
        rank, world_size: this process's place in the data-parallel group.
        checkpoint_every_steps: also checkpoint inside an epoch every this many optimizer steps (0: never).
        on_epoch_end: called with (epoch from 1, global mean metrics) before the epoch's checkpoint.

    Returns:
        The engine (its ``module`` holds the trained weights) and the final progress.

    Raises:
        DataError: when ``pairs`` is empty or a pair cannot be encoded (naming it).
    """
    if not pairs:
        raise DataError("train_preferences: no preference pairs to train on")
    train_cfg = cfg.train
    device = next(model.parameters()).device
    reference: OfflineReference | None = None
    if resume_from is None:
        reference = _broadcast(offline_reference(model, tokenizer, pairs, cfg, known_samples) if rank == 0 else None,
                               world_size)
        if train_cfg.sft_warmup.enabled:
            torch.manual_seed(train_cfg.seed + rank)  # dropout masks of the warm-up: the same in every run
            random.seed(train_cfg.seed + rank)
            sft_warmup(model, tokenizer, pairs, cfg)
            if world_size > 1:  # float non-determinism must not split the ranks
                for param in model.parameters():
                    if param.requires_grad:
                        torch.distributed.broadcast(param.data, src=0)
    engine = (make_engine or (lambda module: build_engine(module, train_cfg)))(model)
    progress, tally = TrainProgress(), MetricTally()
    if resume_from is None:
        torch.manual_seed(train_cfg.seed + rank)
        random.seed(train_cfg.seed + rank)
    else:
        progress, tally, reference = read_checkpoint(resume_from, engine, rank)
        logger.info("resuming from %s at epoch %d, batch %d", resume_from, progress.epoch + 1, progress.batch)
    engine.module.train()

    def losses(indices: Sequence[int]) -> tuple[Tensor, dict[str, float]]:
        batch = make_batch(tokenizer, pairs, indices, cfg, reference).to(device)
        return preference_losses(engine.forward, batch, train_cfg, cfg.model.length_normalize)

    def checkpoint() -> None:
        done = progress.epoch_metrics[-1] if progress.batch == 0 and progress.epoch_metrics else {}
        publish(lambda staging: write_checkpoint(staging, engine, progress, tally, reference, rank),
                {**done, "epoch": progress.epoch, "optimizer_steps": progress.optimizer_steps})

    run_epochs(
        engine, losses, lambda epoch: epoch_batches(len(pairs), train_cfg.batch_size, train_cfg.seed, epoch),
        train_cfg.epochs, train_cfg.grad_accum_steps, progress, tally, rank=rank, world_size=world_size,
        device=device, checkpoint=checkpoint, checkpoint_every_steps=checkpoint_every_steps,
        on_epoch_end=on_epoch_end,
    )
    return engine, progress


def train_preferences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    cfg: Config,
    out_dir: str | Path,
    resume: bool = True,
    on_epoch_end: EpochCallback | None = None,
    checkpoint_every_steps: int = 0,
    known_samples: Mapping[str, Sequence[str]] | None = None,
) -> TrainResult:
    """:func:`fit_preferences` in this process (world size 1): checkpoints in ``out_dir/checkpoint``
    (resumed from with ``resume``), the trained adapter in ``out_dir/adapter``; ``known_samples``: MPO's
    reference samples already drawn, by prompt key.

    The engine follows ``train.deepspeed.enabled``; DeepSpeed needs ``torch.distributed`` initialised.
    """
    out_path = Path(out_dir)
    ckpt_dir = out_path / CHECKPOINT_DIR
    resume_from = ckpt_dir if resume and (ckpt_dir / PROGRESS_FILE).exists() else None
    engine, progress = fit_preferences(
        model, tokenizer, pairs, cfg, directory_publisher(ckpt_dir), resume_from,
        known_samples=known_samples, checkpoint_every_steps=checkpoint_every_steps, on_epoch_end=on_epoch_end,
    )
    adapter_dir = engine.export(out_path / ADAPTER_DIR, rank=0)
    return TrainResult(adapter_dir, progress.epoch, progress.optimizer_steps, tuple(progress.epoch_metrics))
