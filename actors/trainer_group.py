"""The loop's trainer: ``train.num_workers`` training actors that stay up for the whole run.

Starting a Ray Train run, importing the stack, initialising the process group and DeepSpeed's communication op
and loading the policy cost tens of seconds, against a second of optimizer steps on small rounds. The
:class:`TrainerGroup` pays them once: its :class:`TrainWorker` actors (an :class:`~actors.group.ActorGroup`) load
the policy and join one ``torch.distributed`` group (gloo on CPU, NCCL on GPU) once, as the loop starts, and
every round after runs :func:`actors.trainer_rank.train_rank` — the procedure Ray Train's workers run for
``activealign train`` — on the same processes. Each round starts from the weights ``train.round_start`` names
(the seeded LoRA initialisation kept since loading, or the previous round's adapter) with a fresh engine and
optimizer, so it computes what a freshly started trainer computes on the same inputs.

Failures: a worker that dies takes the round's collectives with it, so the whole group is stopped and started
again, and the round resumes from its newest checkpoint, at most ``cluster.retries.trainer_max_failures`` times.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from actors.group import ACTOR_FAILURES, ActorGroup, ActorNotReadyError
from actors.placement import PlacementWait
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
from system.models.loading import load_adapter_weights, load_policy
from system.training.checkpoint import latest_checkpoint, shared_directory_publisher
from system.types import PreferencePair

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class WorkerIdentity:
    """Which process a rank is and how often it loaded the policy (1 while it keeps its model)."""

    pid: int
    policy_loads: int


class TrainWorker:
    """One data-parallel rank: the trainable policy on its device, kept between rounds, and a CPU copy of its
    trainable weights as loaded (the seeded LoRA matrices; every weight without LoRA) for rounds that reset.

    Under ZeRO-3 DeepSpeed partitions the module's own parameters in place, so there the policy is loaded again
    after each round; every other engine leaves the module as it found it (:meth:`TrainEngine.release`).
    """

    def __init__(self, rank: int, world_size: int, config: Config) -> None:
        self.rank = rank
        self.world_size = world_size
        self.config = config
        self.policy_loads = 0
        self.model: torch.nn.Module | None = None
        self.tokenizer: Any = None
        self.initial_weights: dict[str, torch.Tensor] = {}

    def setup(self) -> int:
        """Load the policy (threads: ``cluster.trainer.num_cpus``); returns this process's id."""
        torch.set_num_threads(max(1, int(self.config.cluster.trainer.num_cpus)))
        self._load_policy()
        return os.getpid()

    def _load_policy(self) -> None:
        cfg = self.config
        self.model, self.tokenizer = load_policy(cfg.model, cfg.lora, is_trainable=True, seed=cfg.train.seed)
        self.model.to(train_device(cfg.train))
        self.initial_weights = {name: param.detach().to("cpu", copy=True)
                                for name, param in self.model.named_parameters() if param.requires_grad}
        self.policy_loads += 1

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's address and a free port on it, for rank 0 to host the process group's store."""
        with socket.socket() as probe:
            probe.bind(("", 0))
            return ray.util.get_node_ip_address(), probe.getsockname()[1]

    def join(self, address: str, port: int) -> None:
        """Join the process group hosted at ``address:port`` (and DeepSpeed's communication layer over it)."""
        os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        torch.distributed.init_process_group(dist_backend(self.config.train), rank=self.rank,
                                             world_size=self.world_size)
        if self.config.train.deepspeed.enabled:
            start_deepspeed_comm(self.config.train)

    def fit(self, request: FitRequest, checkpoints: str) -> None:
        """Train from the request's start weights and publish checkpoints under ``checkpoints``."""
        if self.model is None:
            raise ActorNotReadyError("TrainWorker.fit before setup()")
        self._start_weights(self.model, request.initial_adapter)
        publish = shared_directory_publisher(Path(checkpoints), self.rank, self.world_size)
        engine = train_rank(self.model, self.tokenizer, self.config, request, publish, self.rank, self.world_size)
        engine.release()
        if self.config.train.deepspeed.enabled and self.config.train.deepspeed.stage == 3:
            self._load_policy()

    def _start_weights(self, model: torch.nn.Module, initial_adapter: str | None) -> None:
        """Put the round's start weights into ``model``: an adapter's, or the seeded initialisation's."""
        if initial_adapter is not None:
            load_adapter_weights(model, Path(initial_adapter))
            return
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.initial_weights:
                    param.copy_(self.initial_weights[name])

    def identity(self) -> WorkerIdentity:
        return WorkerIdentity(os.getpid(), self.policy_loads)


class TrainerGroup:
    """The loop's :class:`~system.loop.PreferenceTrainer`: :class:`TrainWorker` actors started by :meth:`start` (or
    the first :meth:`fit`) and kept until :meth:`shutdown`.

    After a worker died the group is started again, up to ``cluster.retries.trainer_max_failures`` times; each restart
    resumes from the newest checkpoint of the run.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.max_failures = config.cluster.retries.trainer_max_failures
        self.group: ActorGroup | None = None

    def fit(
        self,
        pairs: Sequence[PreferencePair],
        out_dir: str | Path,
        resume: bool = True,
        reference_samples: Mapping[str, Sequence[str]] | None = None,
        initial_adapter: str | Path | None = None,
    ) -> tuple[Path, list[dict]]:
        """Train on ``pairs``; returns (``out_dir/adapter``, per-epoch metrics of the run, resumed epochs included).

        Checkpoints go to ``out_dir/checkpoints``; with ``resume`` the run continues from the newest one there, else
        they are cleared first. ``initial_adapter``: start from this adapter rather than the seeded initialisation.

        Raises:
            DataError: no pairs to train on.
            ActorFailureError: the workers failed once more than ``cluster.retries.trainer_max_failures`` allows.
        """
        if not pairs:
            raise DataError("trainer: no preference pairs to train on")
        checkpoints = Path(out_dir).absolute() / CHECKPOINTS_DIR
        if not resume:
            shutil.rmtree(checkpoints, ignore_errors=True)
        pairs_ref = ray.put(list(pairs))
        for attempt in range(self.max_failures + 1):
            resume_from = latest_checkpoint(checkpoints) if checkpoints.exists() else None
            request = FitRequest(pairs_ref, str(checkpoints.parent), str(resume_from) if resume_from else None,
                                 dict(reference_samples or {}),
                                 str(initial_adapter) if initial_adapter else None)
            try:
                group = self.start()
                logger.info("trainer: training on %d pairs with %d workers%s", len(pairs), group.num_actors,
                            f", resuming from {resume_from}" if resume_from else "")
                group.call_all("fit", request, str(checkpoints))
            except ACTOR_FAILURES as exc:
                self.shutdown()  # the other ranks wait in collectives for the dead one
                if attempt == self.max_failures:
                    raise workers_failed(self.max_failures, type(exc).__name__, checkpoints) from exc
                logger.warning("trainer: a worker died (%s); starting the group again", type(exc).__name__)
            except BaseException:
                self.shutdown()
                raise
            else:
                return finished(checkpoints)
        raise AssertionError("unreachable")

    def start(self) -> ActorGroup:
        """The running group, or a new one: actors up with the policy loaded, then one process group. :meth:`fit`
        calls it; calling it earlier overlaps the start-up with other work."""
        if self.group is None:
            cfg = self.config
            spec = cfg.cluster.trainer.model_copy(  # memory_gb is not honoured for trainers (see its description)
                update={"num_gpus": worker_resources(cfg).get("GPU", 0.0), "memory_gb": None})
            no_restarts = cfg.cluster.retries.model_copy(update={"max_restarts": 0})  # the whole group restarts
            group = ActorGroup(TrainWorker, cfg.train.num_workers, spec, (cfg.train.num_workers, cfg),
                               placement_wait=PlacementWait.from_config(cfg), retries=no_restarts, name="trainer")
            self.group = group
            group.setup()
            address, port = ray.get(group.actors[0].rendezvous_address.remote())
            group.call_all("join", address, port)
        return self.group

    def identities(self) -> list[WorkerIdentity]:
        """Each rank's process id and policy load count (none before the first :meth:`fit`)."""
        return self.group.call_all("identity") if self.group is not None else []

    def shutdown(self) -> None:
        """Stop the workers (a later :meth:`fit` starts new ones)."""
        if self.group is not None:
            self.group.shutdown()
            self.group = None
