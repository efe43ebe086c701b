"""The single-process preference trainer: offline reference pass, optional SFT warm-up, epochs of DPO/IPO/MPO.

The distributed trainer reuses the same pieces: :func:`epoch_batches` (the data order),
:func:`make_batch` (collation with the offline reference data), :func:`~system.training.objective.preference_loss`
and :mod:`system.training.checkpoint`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.errors import DataError
from system.fileio import atomic_output
from system.losses import get_loss
from system.models.loading import save_adapter
from system.models.logprobs import encode_sequences, token_logps
from system.training.batches import PreferenceBatch, collate_preferences
from system.training.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from system.training.objective import preference_loss
from system.training.reference import MpoReference, prepare_mpo_reference, reference_pair_logps
from system.types import PreferencePair

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
ADAPTER_DIR = "adapter"
REFERENCE_LOGPS_FILE = "reference_logps.pt"
MPO_REFERENCE_FILE = "mpo_reference.json"

OfflineReference = Tensor | MpoReference
"""``[N, 2]`` reference log-probs (DPO/IPO) or MPO's reference data, aligned with the training pairs."""

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_preferences`.

    Attributes:
        adapter_dir: the trained weights (peft adapter, or a full checkpoint without LoRA).
        epochs_completed: epochs done in total, including those of a resumed run.
        optimizer_steps: optimizer updates in total.
        step_losses: training loss of every micro-batch, in order.
        epoch_metrics: mean metrics per epoch (``loss``, rewards/margins or MPO pair probabilities).
    """

    adapter_dir: Path
    epochs_completed: int
    optimizer_steps: int
    step_losses: tuple[float, ...]
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
    D_ref(x) by prompt key) or ``[N, 2]`` reference log-probs."""
    if get_loss(cfg.train.loss).reference_free:
        return prepare_mpo_reference(model, tokenizer, pairs, cfg, known_samples)
    return reference_pair_logps(model, tokenizer, pairs, cfg.model, cfg.train.batch_size)


def _save_reference(reference: OfflineReference, out_dir: Path) -> None:
    if isinstance(reference, MpoReference):
        reference.save(out_dir / MPO_REFERENCE_FILE)
        return
    with atomic_output(out_dir / REFERENCE_LOGPS_FILE) as staging:
        torch.save(reference, staging)


def _load_reference(out_dir: Path, cfg: Config) -> OfflineReference:
    if get_loss(cfg.train.loss).reference_free:
        return MpoReference.load(out_dir / MPO_REFERENCE_FILE)
    return torch.load(out_dir / REFERENCE_LOGPS_FILE, weights_only=True)


def _optimize(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batch_losses: Iterable[tuple[Tensor, dict[str, float]]],
    grad_accum_steps: int,
    max_grad_norm: float,
) -> tuple[list[dict[str, float]], int]:
    """Backward every micro-batch loss; clip and step every ``grad_accum_steps`` (and after the last one).

    Returns:
        The metrics of every micro-batch and the number of optimizer steps taken.
    """
    params = [param for param in model.parameters() if param.requires_grad]
    metrics: list[dict[str, float]] = []
    steps = pending = 0
    optimizer.zero_grad(set_to_none=True)
    for loss, batch_metrics in micro_batch_losses:
        (loss / grad_accum_steps).backward()
        metrics.append(batch_metrics)
        pending += 1
        if pending == grad_accum_steps:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps, pending = steps + 1, 0
    if pending:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    return metrics, steps


def _mean_metrics(metrics: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: sum(m[key] for m in metrics) / len(metrics) for key in metrics[0]}


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [param for param in model.parameters() if param.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def sft_warmup(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair], cfg: Config
) -> list[float]:
    """Supervised warm-up on the chosen responses: minimise the mean NLL −log π(y_w,t | x, y_w,<t) per token.

    Runs ``train.sft_warmup.epochs`` epochs at ``train.sft_warmup.lr`` with its own AdamW (discarded after).

    Returns:
        The loss of every micro-batch.
    """
    warmup, train_cfg = cfg.train.sft_warmup, cfg.train
    device = next(model.parameters()).device
    optimizer = _optimizer(model, warmup.lr, train_cfg.weight_decay)
    model.train()

    def losses(epoch: int) -> Iterable[tuple[Tensor, dict[str, float]]]:
        for indices in epoch_batches(len(pairs), train_cfg.batch_size, train_cfg.seed, -1 - epoch):
            batch = encode_sequences(
                tokenizer, [pairs[i].prompt for i in indices], [pairs[i].chosen for i in indices], cfg.model
            ).to(device)
            nll = -token_logps(model, batch).sum() / batch.response_mask.sum()
            yield nll, {"loss": nll.item()}

    history: list[float] = []
    for epoch in range(warmup.epochs):
        metrics, _ = _optimize(model, optimizer, losses(epoch), train_cfg.grad_accum_steps, train_cfg.max_grad_norm)
        history.extend(m["loss"] for m in metrics)
        logger.info("SFT warm-up epoch %d: loss %.4f", epoch + 1, _mean_metrics(metrics)["loss"])
    return history


def train_preferences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    cfg: Config,
    out_dir: str | Path,
    resume: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train the policy on preference pairs with ``train.loss`` (DPO, IPO or MPO) for ``train.epochs`` epochs.

    Before the first step, πref's contribution is computed once and stored in ``out_dir`` (reference
    log-probs, or MPO's pair probabilities and samples), then the optional SFT warm-up runs. Each epoch
    visits the pairs in an order fixed by (``train.seed``, epoch), takes AdamW steps on the mean loss of
    ``train.batch_size`` pairs accumulated over ``train.grad_accum_steps`` micro-batches with gradient
    clipping, and ends with an atomic checkpoint (weights, optimizer, RNG, position). With ``resume``
    an existing checkpoint is restored and training continues after its last completed epoch, giving the
    same result as an uninterrupted run.

    Args:
        model: the policy from :func:`~system.models.loading.load_policy` (trainable), on its device.
        tokenizer: its tokenizer.
        pairs: labelled pairs (chosen ≻ rejected).
        cfg: the whole config (``train`` for the optimisation, ``model`` for lengths, ``generation`` for
            MPO's reference samples).
        out_dir: run directory for the checkpoint, the offline reference data and the final adapter.
        resume: continue from ``out_dir``'s checkpoint when there is one.
        on_epoch_end: called with (epoch number from 1, mean metrics) after each epoch's checkpoint.

    Raises:
        DataError: when ``pairs`` is empty or a pair cannot be encoded (naming it).
    """
    if not pairs:
        raise DataError("train_preferences: no preference pairs to train on")
    train_cfg = cfg.train
    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_path / CHECKPOINT_DIR
    device = next(model.parameters()).device
    optimizer = _optimizer(model, train_cfg.lr, train_cfg.weight_decay)
    if resume and (ckpt_dir / "trainer_state.pt").exists():
        state = load_checkpoint(model, optimizer, ckpt_dir)
        reference = _load_reference(out_path, cfg)
        logger.info("resuming from %s after epoch %d", ckpt_dir, state.epochs_completed)
    else:
        torch.manual_seed(train_cfg.seed)
        state = TrainerState()
        reference = offline_reference(model, tokenizer, pairs, cfg)
        _save_reference(reference, out_path)
        if train_cfg.sft_warmup.enabled:
            sft_warmup(model, tokenizer, pairs, cfg)
    model.train()

    def losses(epoch: int) -> Iterable[tuple[Tensor, dict[str, float]]]:
        for indices in epoch_batches(len(pairs), train_cfg.batch_size, train_cfg.seed, epoch):
            batch = make_batch(tokenizer, pairs, indices, cfg, reference).to(device)
            yield preference_loss(model, batch, train_cfg, cfg.model.length_normalize)

    for epoch in range(state.epochs_completed, train_cfg.epochs):
        metrics, steps = _optimize(model, optimizer, losses(epoch), train_cfg.grad_accum_steps, train_cfg.max_grad_norm)
        summary = _mean_metrics(metrics)
        state.epochs_completed, state.optimizer_steps = epoch + 1, state.optimizer_steps + steps
        state.step_losses.extend(m["loss"] for m in metrics)
        state.epoch_metrics.append(summary)
        save_checkpoint(model, optimizer, state, ckpt_dir)
        logger.info("epoch %d/%d: %s", epoch + 1, train_cfg.epochs, summary)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, summary)
    adapter_dir = save_adapter(model, out_path / ADAPTER_DIR)
    return TrainResult(
        adapter_dir, state.epochs_completed, state.optimizer_steps, tuple(state.step_losses), tuple(state.epoch_metrics)
    )
