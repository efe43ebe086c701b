"""Training checkpoints at optimizer-step boundaries, the same format for every engine and world size.

Layout of a checkpoint directory (rank 0 writes the shared files; every rank writes its own)::

    progress.json        TrainProgress: epoch, batch position, optimizer steps, finished epochs' metrics (rank 0)
    reference.pt         the offline πref data the loss reads (rank 0)
    rank{r}.pt           rank r's RNG states and its metric tally of the epoch in progress
    engine.pt | deepspeed/   the engine's trainable weights and optimizer state (TrainEngine.save)

A :data:`Publish` callable makes a staged directory the newest checkpoint: an atomic directory swap
in a single process, a rename by rank 0 for ranks that share a filesystem, ``ray.train.report`` under Ray Train.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from system.errors import DataError
from system.fileio import atomic_output
from system.run_state import load_state_file
from system.training.engine import TrainEngine
from system.training.reference import MpoReference
from system.training.runner import MetricTally, TrainProgress

logger = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
REFERENCE_FILE = "reference.pt"

Publish = Callable[[Callable[[Path], None], dict[str, float]], None]
"""``publish(write, metrics)``: give ``write`` an empty staging directory on every rank, then commit it."""


def _rank_file(rank: int) -> str:
    return f"rank{rank}.pt"


def rng_states() -> dict[str, Any]:
    """Every RNG training draws from: torch (CPU and the current CUDA device) and Python's."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"])


def write_checkpoint(
    directory: Path, engine: TrainEngine, progress: TrainProgress, tally: MetricTally, reference: Any, rank: int
) -> None:
    """Write this rank's part of a checkpoint into the (staging) ``directory``; collective under DeepSpeed."""
    engine.save(directory)
    torch.save({"rng": rng_states(), "tally": asdict(tally)}, directory / _rank_file(rank))
    if rank == 0:
        torch.save(_reference_state(reference), directory / REFERENCE_FILE)
        (directory / PROGRESS_FILE).write_text(json.dumps(asdict(progress)))


def read_checkpoint(directory: Path, engine: TrainEngine, rank: int) -> tuple[TrainProgress, MetricTally, Any]:
    """Restore engine and RNG states from ``directory``; returns (progress, this rank's tally, reference data)."""
    engine.load(directory)
    own = load_state_file(directory / _rank_file(rank))
    set_rng_states(own["rng"])
    progress = read_progress(directory / PROGRESS_FILE)
    reference = _reference_from_state(load_state_file(directory / REFERENCE_FILE))
    return progress, MetricTally(**own["tally"]), reference


def _reference_state(reference: Any) -> Any:
    """The offline reference data as ``torch.load(weights_only=True)`` reads it: a ``[N, 2]`` tensor or None as
    is, MPO's data as a dict of lists."""
    if isinstance(reference, MpoReference):
        return {"pair_prob_chosen": list(reference.pair_prob_chosen),
                "samples": [list(samples) for samples in reference.samples]}
    return reference


def _reference_from_state(state: Any) -> Any:
    """Inverse of :func:`_reference_state`."""
    if isinstance(state, dict):
        return MpoReference(tuple(state["pair_prob_chosen"]), tuple(tuple(samples) for samples in state["samples"]))
    return state


def read_progress(path: Path) -> TrainProgress:
    """A checkpoint's ``progress.json``; anything but non-negative integers epoch/batch/optimizer_steps and a list
    of metric objects raises :class:`DataError` naming the file."""
    try:
        data = json.loads(path.read_bytes())
        progress = TrainProgress(**data)
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise DataError(f"{path}: not a checkpoint's progress ({type(exc).__name__})") from None
    for name in ("epoch", "batch", "optimizer_steps"):
        value = getattr(progress, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"{path}: field {name!r}: expected a non-negative integer, got {value!r}")
    if not isinstance(progress.epoch_metrics, list) or not all(isinstance(m, dict) for m in progress.epoch_metrics):
        raise DataError(f"{path}: field 'epoch_metrics': expected a list of objects")
    return progress


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (most optimizer steps) at or below ``root``, or None when there is none.

    A checkpoint whose progress file does not read is skipped with a warning: a worker killed while Ray Train
    copied its checkpoint into place leaves one half written, and the run resumes from the newest complete one.

    Raises:
        DataError: every checkpoint found is broken (naming the first); resuming from scratch would silently
            drop the training they hold.
    """
    found, broken = [], []
    for path in sorted(root.rglob(PROGRESS_FILE)):
        try:
            found.append((read_progress(path).optimizer_steps, path.stat().st_mtime, path.parent))
        except DataError as exc:
            broken.append(exc)
    if broken and not found:
        raise broken[0]
    for error in broken:
        logger.warning("skipping an incomplete checkpoint: %s", error)
    return max(found)[2] if found else None


def directory_publisher(ckpt_dir: Path) -> Publish:
    """Single-process publishing: each checkpoint atomically replaces ``ckpt_dir``."""

    def publish(write: Callable[[Path], None], metrics: dict[str, float]) -> None:
        with atomic_output(ckpt_dir) as staging:
            staging.mkdir()
            write(staging)

    return publish


def shared_directory_publisher(root: Path, rank: int, world_size: int) -> Publish:
    """Publishing for ``world_size`` ranks that share a filesystem: every rank writes its part into one staging
    directory, then rank 0 renames it to ``root/checkpoint_<optimizer steps>``, so a checkpoint under ``root`` is
    complete or absent and :func:`latest_checkpoint` finds the newest. Collective (barriers) when ``world_size`` > 1.
    """

    def barrier() -> None:
        if world_size > 1:
            torch.distributed.barrier()

    def publish(write: Callable[[Path], None], metrics: dict[str, float]) -> None:
        name = f"checkpoint_{int(metrics['optimizer_steps']):08d}"
        staging = root.parent / f".{root.name}-staging" / name
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while writing it
            staging.mkdir(parents=True)
        barrier()
        write(staging)
        barrier()
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            staging.rename(root / name)
        barrier()

    return publish
