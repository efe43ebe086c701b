"""What every rank of both trainers runs: the per-rank procedure, its device and process-group setup, and the
request and resources both drivers share.

Two drivers run these ranks: :class:`actors.trainer.Trainer` (Ray Train ``TorchTrainer`` workers started per
``activealign train`` run) and :class:`actors.trainer_group.TrainerGroup` (the loop's workers, up for the whole run).
Each loads the policy its own way, then calls :func:`train_rank`: :func:`system.training.fit_preferences` — the
same procedure, epoch runner and checkpoints as a single process — with per-epoch resource metrics, then the
adapter export.
"""

from __future__ import annotations

import fcntl
import json
import logging
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from system.config import Config, TrainConfig
from system.errors import ActorFailureError
from system.training import fit_preferences
from system.training.checkpoint import PROGRESS_FILE, Publish, latest_checkpoint
from system.training.engine import TrainEngine
from system.types import PreferencePair

logger = logging.getLogger(__name__)


def _all_mean(value: float, device: torch.device) -> float:
    """Mean of ``value`` over ranks; ``device`` is the rank's training device (NCCL reduces CUDA tensors only)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return float(tensor) / torch.distributed.get_world_size()


SHM_OP_BUILDER = "ShareMemCommBuilder"


@contextmanager
def extension_build_lock(name: str) -> Iterator[Path]:
    """Hold the right to build or load torch JIT extension ``name``; yields its build directory.

    torch's ``cpp_extension`` serialises builders of an extension with a baton, ``<build dir>/lock``, a file
    created with ``O_EXCL`` and removed when the build ends. A process killed mid-build leaves the file behind,
    and every later loader polls for it to vanish, for ever. An ``flock`` held on ``<build dir>.flock`` is
    released by the kernel when its holder dies: while one live process builds, the next waits here; once this
    lock is granted no live process that loads through it is building, so a baton found now was left by a dead
    one and is removed. Every activealign process loads JIT extensions only under this lock.
    """
    from torch.utils.cpp_extension import _get_build_directory  # the directory torch's own loader builds in

    build_dir = Path(_get_build_directory(name, verbose=False))
    with (build_dir.parent / f"{build_dir.name}.flock").open("a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # released on close, or by the kernel when this process dies
        baton = build_dir / "lock"
        if baton.exists():
            baton.unlink()
            logger.warning("removed the extension build lock %s: the process building it was killed", baton)
        yield build_dir


def load_deepspeed_shm_op() -> None:
    """Build (the first time) or load DeepSpeed's CPU shared-memory collectives op under :func:`extension_build_lock`.

    DeepSpeed keeps loaded ops per process, so the ``deepspeed.init_distributed`` that follows finds the op
    loaded and does not touch torch's build baton itself. A no-op where the accelerator has no such op (CUDA).
    """
    from deepspeed.accelerator import get_accelerator
    from deepspeed.comm.torch import build_shm_op

    builder = get_accelerator().create_op_builder(SHM_OP_BUILDER)
    if builder is None:
        return
    with extension_build_lock(builder.name):
        build_shm_op()


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def dist_backend(train_cfg: TrainConfig) -> str:
    """The ``torch.distributed`` backend of the trainer workers: NCCL on GPUs, gloo on CPUs."""
    return "nccl" if train_cfg.use_gpu else "gloo"


def start_deepspeed_comm(train_cfg: TrainConfig) -> None:
    """DeepSpeed's communication layer over the initialised process group (on CPU its shared-memory op is
    JIT-built on first use, under :func:`extension_build_lock`)."""
    import deepspeed

    load_deepspeed_shm_op()
    deepspeed.init_distributed(dist_backend=dist_backend(train_cfg))


def train_device(train_cfg: TrainConfig) -> torch.device:
    """The worker's training device: its (single visible) current GPU, or the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if train_cfg.use_gpu else torch.device("cpu")


@dataclass(frozen=True)
class FitRequest:
    """One training run, the same for every rank.

    Attributes:
        pairs: object ref of the ``list[PreferencePair]`` to train on.
        out_dir: where the adapter is exported (``out_dir/adapter``).
        resume_from: a checkpoint directory to continue from, or None for a fresh start.
        reference_samples: MPO's D_ref(x) drawn earlier, by prompt key.
        initial_adapter: an adapter to start from instead of the seeded LoRA initialisation (warm start).
    """

    pairs: Any
    out_dir: str
    resume_from: str | None = None
    reference_samples: Mapping[str, Sequence[str]] = field(default_factory=dict)
    initial_adapter: str | None = None


def train_rank(
    model: torch.nn.Module, tokenizer: Any, cfg: Config, request: FitRequest, publish: Publish, rank: int, world: int
) -> TrainEngine:
    """What every rank of every trainer runs: :func:`system.training.fit_preferences` on the request's pairs with
    per-epoch resource metrics (mean seconds per batch, peak memory), then the adapter export.

    ``model`` is the trainable policy on its device, holding the weights to start from; returns the engine.
    """
    pairs: list[PreferencePair] = ray.get(request.pairs)
    device = next(model.parameters()).device
    batches_per_epoch = -(-len(pairs) // cfg.train.batch_size)
    epoch_started = [time.perf_counter()]

    def add_resource_metrics(epoch: int, metrics: dict[str, float]) -> None:
        """Mean seconds per batch since the previous epoch end (or the resume), peak memory."""
        now = time.perf_counter()
        metrics["step_time_s"] = _all_mean((now - epoch_started[0]) / batches_per_epoch, device)
        metrics["peak_rss_gb"] = _peak_rss_gb()
        if cfg.train.use_gpu:
            metrics["peak_gpu_gb"] = _all_mean(torch.cuda.max_memory_allocated() / 2**30, device)
        epoch_started[0] = now

    resume_from = Path(request.resume_from) if request.resume_from else None
    engine, _ = fit_preferences(
        model, tokenizer, pairs, cfg, publish, resume_from, known_samples=request.reference_samples, rank=rank,
        world_size=world, checkpoint_every_steps=cfg.train.checkpoint_every_steps, on_epoch_end=add_resource_metrics,
    )
    engine.export(Path(request.out_dir) / "adapter", rank)
    return engine


def worker_resources(cfg: Config) -> dict[str, float]:
    """Ray resources of one trainer worker: ``cluster.trainer``, and at least one GPU with ``train.use_gpu``."""
    spec = cfg.cluster.trainer
    resources = {"CPU": spec.num_cpus, **spec.resources}
    if cfg.train.use_gpu:
        resources["GPU"] = max(spec.num_gpus, 1.0)
    return resources


def workers_failed(max_failures: int, last: str, checkpoints: Path) -> ActorFailureError:
    """The error once the training workers failed ``max_failures + 1`` times."""
    return ActorFailureError(
        f"trainer: the training workers failed {max_failures + 1} time{'s' if max_failures else ''} (last: {last}); "
        f"see the worker logs under /tmp/ray/session_latest/logs, then rerun (training resumes from the newest "
        f"checkpoint under {checkpoints}) or raise cluster.retries.trainer_max_failures"
    )


def finished(checkpoints: Path) -> tuple[Path, list[dict]]:
    """(adapter directory, per-epoch metrics of the whole run) from the newest checkpoint under ``checkpoints``
    (the adapter lies beside them)."""
    final = latest_checkpoint(checkpoints)
    history = json.loads((final / PROGRESS_FILE).read_text())["epoch_metrics"] if final else []
    logger.info("training done: %s", history[-1] if history else "no epoch to report")
    return checkpoints.parent / "adapter", history
