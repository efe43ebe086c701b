"""``cluster``: where Ray runs, the resources of each actor group, and the restart and retry bounds."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from system.config.section import Section


class ResourceSpec(Section):
    """Ray resources one actor of a group asks for."""

    num_cpus: float = Field(
        1.0, ge=0, description="Logical CPUs reserved per actor (fractions allowed; a trainer uses that many threads)."
    )
    num_gpus: float = Field(
        0.0, ge=0,
        description="GPUs reserved per actor; fractions such as 0.5 let two actors share a device. Actor groups with "
        "GPUs reserve them in a placement group first.",
    )
    memory_gb: float | None = Field(
        None, gt=0,
        description="Memory reserved per actor in GiB for Ray's scheduler; honoured by generation, feature and "
        "selector actors (trainer and oracle ignore it); null reserves none.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per actor by name, e.g. {generation_node: 1} to pin a group to the nodes "
        "that advertise that resource.",
    )


class RetryConfig(Section):
    """How often and how long dead actors are waited for; once a bound is used up the command stops with exit 3
    and one line naming the actor."""

    max_restarts: int = Field(
        2, ge=0,
        description="How often Ray restarts a dead generation actor, feature worker or selector (0: never); once "
        "they are used up the command exits 3 naming the actor.",
    )
    max_attempts: int = Field(
        3, ge=1,
        description="Tries of one call of an actor group (generate, featurize, …) across actor deaths before the "
        "command exits 3.",
    )
    restart_timeout_s: float = Field(
        300.0, gt=0,
        description="Seconds to wait for Ray to bring a dead actor back (it may be waiting for free resources) "
        "before the command exits 3.",
    )
    trainer_max_failures: int = Field(
        2, ge=0,
        description="How often the training workers are started again after one died (Ray Train for `train`, the "
        "loop's trainer group for `run`), each time from the newest step checkpoint; one more failure and the "
        "command exits 3 naming the checkpoint folder.",
    )


class ClusterConfig(Section):
    """Where Ray runs: an in-process local cluster (``address: null``) or an existing one."""

    address: str | None = Field(
        None,
        description="Ray cluster to join ('auto', 'ray://host:10001', 'host:6379'); null uses $RAY_ADDRESS when set "
        "(as under ray job submit), else starts an in-process local cluster.",
    )
    num_cpus: int | None = Field(
        8, ge=1,
        description="Logical CPUs of the local cluster (null: this machine's count). They are reservations, not "
        "cores: 8 lets every actor of the tiny setup start on a 2-core laptop. Ignored when joining a cluster.",
    )
    include_dashboard: bool = Field(False, description="Start the Ray dashboard with the local cluster.")
    dashboard_host: str = Field(
        "127.0.0.1", description="Interface the local dashboard listens on (0.0.0.0 exposes it to the network)."
    )
    placement: Literal["split", "colocate"] = Field(
        "split",
        description="'split' gives each actor group its own placement group (one bundle per actor); 'colocate' "
        "puts generation actor i and feature worker i into bundle i of one shared placement group (their resources "
        "summed), so they share a node and its GPU. The selector and the trainer group have their own groups in "
        "both.",
    )
    placement_timeout_s: float = Field(
        600.0, gt=0,
        description="Seconds a placement group may wait to be granted (other work freeing resources; on a joined "
        "cluster also an autoscaler adding the nodes it asks for) before the command exits: 2 when no node can hold "
        "a bundle, 3 when the resources stay busy. The local cluster cannot grow: a bundle no node holds stops it "
        "at once.",
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray runtime_env (working_dir, pip, env_vars, …) passed to ray.init when joining a cluster.",
    )
    generation: ResourceSpec = Field(ResourceSpec(), description="Resources of each generation actor.")
    features: ResourceSpec = Field(ResourceSpec(num_cpus=0.5), description="Resources of each feature worker.")
    selector: ResourceSpec = Field(
        ResourceSpec(num_cpus=0.25), description="Resources of the selector actor (holds V and V⁻¹)."
    )
    trainer: ResourceSpec = Field(ResourceSpec(), description="Resources of each Ray Train worker.")
    oracle: ResourceSpec = Field(ResourceSpec(num_cpus=0.5), description="Resources of each oracle judge replica.")
    retries: RetryConfig = Field(RetryConfig(), description="Restart and retry bounds of the actors.")

    def ray_address(self) -> str | None:
        """``address``, else ``$RAY_ADDRESS`` (set by ``ray job submit``); None means a Ray started in-process."""
        return self.address or os.environ.get("RAY_ADDRESS") or None
