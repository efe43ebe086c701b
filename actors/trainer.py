"""Distributed preference training: Ray Train ``TorchTrainer`` workers, each running
:func:`system.training.fit_preferences` — the same procedure, epoch runner and checkpoints as a
single process — with a DeepSpeed engine (ZeRO stage, offload and precision from ``train.deepspeed``)
or DDP (:mod:`system.training.engine`).

This module is setup only: start the process group, load the policy, publish checkpoints through
``ray.train.report`` (every rank's files land in one checkpoint directory), export the adapter.
:meth:`Trainer.fit` resumes from the newest checkpoint under ``out_dir`` — at an epoch end or, with
``checkpoint_every_steps``, inside an epoch — and continues as the uninterrupted run would.
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
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchConfig, TorchTrainer

from system.config import Config
from system.errors import ActorFailureError, DataError
from system.training.checkpoint import PROGRESS_FILE, latest_checkpoint
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


def _publish_to_ray(write: Callable[[Path], None], metrics: dict[str, float]) -> None:
    """Every rank stages its files and reports them; Ray Train merges them into one checkpoint directory."""
    with tempfile.TemporaryDirectory() as staging:
        write(Path(staging))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(staging))


def train_worker(loop: dict[str, Any]) -> None:
    """The per-worker setup Ray Train runs (``loop``: config dump, pairs ref, out_dir, resume_from, ...)."""
    from system.models.loading import load_policy
    from system.training import fit_preferences

    torch.set_num_threads(loop.get("threads", 1))
    cfg = Config.model_validate(loop["config"])
    train_cfg = cfg.train
    if train_cfg.deepspeed.enabled:
        import deepspeed

        load_deepspeed_shm_op()
        deepspeed.init_distributed(dist_backend="nccl" if train_cfg.use_gpu else "gloo")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    pairs: list[PreferencePair] = ray.get(loop["pairs"])
    model, tokenizer = load_policy(cfg.model, cfg.lora, is_trainable=True, seed=train_cfg.seed)
    device = torch.device("cuda", torch.cuda.current_device()) if train_cfg.use_gpu else torch.device("cpu")
    model.to(device)
    batches_per_epoch = -(-len(pairs) // train_cfg.batch_size)
    epoch_started = [time.perf_counter()]

    def add_resource_metrics(epoch: int, metrics: dict[str, float]) -> None:
        """Mean seconds per batch since the previous epoch end (or the resume), peak memory."""
        now = time.perf_counter()
        metrics["step_time_s"] = _all_mean((now - epoch_started[0]) / batches_per_epoch, device)
        metrics["peak_rss_gb"] = _peak_rss_gb()
        if train_cfg.use_gpu:
            metrics["peak_gpu_gb"] = _all_mean(torch.cuda.max_memory_allocated() / 2**30, device)
        epoch_started[0] = now

    restored = ray.train.get_checkpoint()  # set when Ray Train restarted the workers after a failure
    resume_from = restored.path if restored is not None else loop.get("resume_from")
    engine, _ = fit_preferences(
        model, tokenizer, pairs, cfg, _publish_to_ray, Path(resume_from) if resume_from else None,
        known_samples=loop.get("reference_samples"), rank=rank, world_size=world,
        checkpoint_every_steps=loop.get("checkpoint_every_steps", 0), on_epoch_end=add_resource_metrics,
    )
    engine.export(Path(loop["out_dir"]) / "adapter", rank)


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

    ``checkpoint_every_steps``: also checkpoint inside an epoch every this many optimizer steps (0: epoch ends only).
    Ray Train restarts the workers after one died (a SIGKILL, an OOM kill) up to
    ``cluster.retries.trainer_max_failures`` times; each restart resumes from the newest checkpoint this run reported.
    """

    def __init__(self, config: Config, checkpoint_every_steps: int = 0) -> None:
        self.config = config
        self.checkpoint_every_steps = checkpoint_every_steps

    def fit(
        self,
        pairs: Sequence[PreferencePair],
        out_dir: str | Path,
        resume: bool = True,
        reference_samples: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[Path, list[dict]]:
        """Train on ``pairs``; returns (adapter directory, per-epoch metrics of the whole run, resumed epochs included).

        ``reference_samples``: MPO's D_ref(x) drawn earlier, by prompt key (only missing prompts are sampled).

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
        resources = {"CPU": spec.num_cpus, **spec.resources}
        if cfg.train.use_gpu:
            resources["GPU"] = max(spec.num_gpus, 1.0)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"config": cfg.model_dump(mode="json"), "pairs": ray.put(list(pairs)),
                               "out_dir": str(out_path), "resume_from": resume_from and str(resume_from),
                               "reference_samples": dict(reference_samples or {}),
                               "threads": max(1, int(spec.num_cpus)),
                               "checkpoint_every_steps": self.checkpoint_every_steps},
            scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                         resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
            run_config=RunConfig(storage_path=str(storage), name=f"fit-{time.time_ns()}",
                                 failure_config=FailureConfig(max_failures=max_failures)),
        )
        try:
            result = fit_interruptibly(trainer)
        except TrainingFailedError as exc:
            last = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ActorFailureError(
                f"trainer: the training workers failed {max_failures + 1} time{'s' if max_failures else ''} (last: "
                f"{last}); see the worker logs under /tmp/ray/session_latest/logs, then rerun (training resumes from "
                f"the newest checkpoint under {storage}) or raise cluster.retries.trainer_max_failures"
            ) from exc
        final = latest_checkpoint(storage)
        history = json.loads((final / PROGRESS_FILE).read_text())["epoch_metrics"] if final else []
        logger.info("training done: %s", history[-1] if history else result.metrics)
        return out_path / "adapter", history
