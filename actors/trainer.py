"""``activealign train``'s driver: a Ray Train ``TorchTrainer`` run whose workers each run
:func:`actors.trainer_rank.train_rank` — :func:`system.training.fit_preferences`, the same procedure, epoch runner
and checkpoints as a single process — with a DeepSpeed engine (ZeRO stage, offload and precision from
``train.deepspeed``) or DDP (:mod:`system.training.engine`).

This module is the Ray Train setup only: start the process group, load the policy, publish checkpoints through
``ray.train.report`` (every rank's files land in one checkpoint directory). :meth:`Trainer.fit` resumes from the
newest checkpoint under ``out_dir`` — at an epoch end or, with ``train.checkpoint_every_steps``, inside an epoch —
and continues as the uninterrupted run would. The per-rank code it shares with the loop's long-lived workers
(:class:`actors.trainer_group.TrainerGroup`) is :mod:`actors.trainer_rank`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchConfig, TorchTrainer

from actors.trainer_rank import (
    FitRequest,
    dist_backend,
    finished,
    start_deepspeed_comm,
    train_device,
    train_rank,
    worker_resources,
    workers_failed,
)
from system.config import Config
from system.errors import DataError
from system.models.loading import load_adapter_weights
from system.training.checkpoint import latest_checkpoint
from system.types import PreferencePair

logger = logging.getLogger(__name__)


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

