"""Distributed preference training: Ray Train ``TorchTrainer`` workers, each running
:func:`system.training.fit_preferences` — the same procedure, epoch runner and checkpoints as a
single process — with a DeepSpeed engine (ZeRO stage, offload and precision from ``train.deepspeed``)
or DDP (:mod:`system.training.engine`).

This module is setup only: start the process group, load the policy, publish checkpoints through
``ray.train.report`` (every rank's files land in one checkpoint directory), export the adapter.
:meth:`Trainer.fit` resumes from the newest checkpoint under ``out_dir`` — at an epoch end or, with
``train.checkpoint_every_steps``, inside an epoch — and continues as the uninterrupted run would.

:func:`train_rank` is what a rank runs once its policy is loaded; ``activealign train`` runs it in a Ray Train job,
the active loop in the workers of :class:`actors.trainer_group.TrainerGroup`, which stay up across rounds.
"""

from __future__ import annotations

import fcntl
import json
import logging
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchConfig, TorchTrainer

from system.config import Config, TrainConfig
from system.errors import ActorFailureError, DataError
from system.models.loading import load_adapter_weights
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


def _publish_to_ray(write: Callable[[Path], None], metrics: dict[str, float]) -> None:
    """Every rank stages its files and reports them; Ray Train merges them into one checkpoint directory."""
    with tempfile.TemporaryDirectory() as staging:
        write(Path(staging))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(staging))


def train_worker(loop: dict[str, Any]) -> None:
    """The per-worker setup Ray Train runs (``loop``: config dump, the FitRequest, threads)."""
    from system.models.loading import load_policy

    torch.set_num_threads(loop["threads"])
    cfg = Config.model_validate(loop["config"])
    if cfg.train.deepspeed.enabled:
        start_deepspeed_comm(cfg.train)
    context = ray.train.get_context()
    model, tokenizer = load_policy(cfg.model, cfg.lora, is_trainable=True, seed=cfg.train.seed)
    model.to(train_device(cfg.train))
    request: FitRequest = loop["request"]
    if request.initial_adapter:
        load_adapter_weights(model, Path(request.initial_adapter))
    restored = ray.train.get_checkpoint()  # set when Ray Train restarted the workers after a failure
    if restored is not None:
        request = replace(request, resume_from=restored.path)
    train_rank(model, tokenizer, cfg, request, _publish_to_ray, context.get_world_rank(), context.get_world_size())


def fit_interruptibly(trainer: TorchTrainer) -> Any:
    """``trainer.fit()`` on a helper thread, so that Ctrl-C and SIGTERM stop this command as everywhere else.

    On the main thread Ray Train installs a SIGINT handler that aborts the run and lets ``fit`` return as if it
    had finished — the loop would go on with a half-trained adapter — and leaves it installed, so the next Ctrl-C
    exits 0. Off the main thread it installs none: the main thread waits here, an interrupt raises
    KeyboardInterrupt, and the Ray shutdown that follows stops the controller and the training workers.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # handed to the main thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class Trainer:
    """Ray Train + DeepSpeed trainer: ``train.num_workers`` workers with ``cluster.trainer`` resources each.

    Ray Train restarts the workers after one died (a SIGKILL, an OOM kill) up to
    ``cluster.retries.trainer_max_failures`` times; each restart resumes from the newest checkpoint this run reported.
    """

    def __init__(self, config: Config) -> None:
        self.config = config

    def fit(
        self,
        pairs: Sequence[PreferencePair],
        out_dir: str | Path,
        resume: bool = True,
        reference_samples: Mapping[str, Sequence[str]] | None = None,
        initial_adapter: str | Path | None = None,
    ) -> tuple[Path, list[dict]]:
        """Train on ``pairs``; returns (adapter directory, per-epoch metrics of the whole run, resumed epochs included).

        ``reference_samples``: MPO's D_ref(x) drawn earlier, by prompt key (only missing prompts are sampled).
        ``initial_adapter``: start from this adapter instead of the seeded LoRA initialisation.

        Raises:
            DataError: no pairs to train on.
            ActorFailureError: the workers failed once more than ``cluster.retries.trainer_max_failures`` allows.
        """
        if not pairs:
            raise DataError("trainer: no preference pairs to train on")
        cfg, spec = self.config, self.config.cluster.trainer
        max_failures = cfg.cluster.retries.trainer_max_failures
        out_path = Path(out_dir).absolute()
        storage = out_path / "ray_train"
        resume_from = latest_checkpoint(storage) if resume else None
        if resume_from is not None:
            logger.info("resuming training from %s", resume_from)
        request = FitRequest(ray.put(list(pairs)), str(out_path), str(resume_from) if resume_from else None,
                             dict(reference_samples or {}),
                             str(initial_adapter) if initial_adapter else None)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"config": cfg.model_dump(mode="json"), "request": request,
                               "threads": max(1, int(spec.num_cpus))},
            scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                         resources_per_worker=worker_resources(cfg)),
            torch_config=TorchConfig(backend=dist_backend(cfg.train)),
            run_config=RunConfig(storage_path=str(storage), name=f"fit-{time.time_ns()}",
                                 failure_config=FailureConfig(max_failures=max_failures)),
        )
        try:
            fit_interruptibly(trainer)
        except TrainingFailedError as exc:
            last = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise workers_failed(max_failures, last, storage) from exc
        return finished(storage)


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
