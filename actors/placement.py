"""Placement groups: one bundle per actor, checked against the cluster before anything waits on them.

``cluster.placement`` decides how the loop's actor groups share the cluster:

* ``split``: every actor group (generation fleet, feature workers, selector, trainer group) reserves a placement
  group of its own, bundle ``i`` holding actor ``i`` with ``cluster.<group>`` resources.
* ``colocate`` (OpenRLHF's hybrid engine): generation actor ``i`` and feature worker ``i`` share bundle ``i`` of one
  placement group, whose bundle holds both roles' resources summed (e.g. ``0.5 + 0.5`` of one GPU), so both run
  on the same node and device; the selector and the trainer group keep their own groups.

Ray leaves a placement group it cannot place PENDING forever, and every actor in it with it. So before
reserving, :func:`reserve` checks that each bundle fits on one live node and that all bundles fit in the
cluster's total; a bundle that never fits stops the command with a :class:`~system.errors.ConfigError` naming
the config key (exit 2), and a group that fits but is not granted in time (other work holds the resources)
with an :class:`~system.errors.ActorFailureError` (exit 3). A joined cluster may grow (an autoscaler adds the
nodes a pending group asks for), so there the check is retried until ``cluster.placement_timeout_s``; the
local cluster cannot, so there it decides at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from system.config import Config, ResourceSpec
from system.errors import ActorFailureError, ConfigError

logger = logging.getLogger(__name__)

Bundle = dict[str, float]
NODE_POLL_S = 2.0


@dataclass(frozen=True)
class PlacementWait:
    """How long a reservation waits: for nodes that can hold its bundles, then for the grant.

    Attributes:
        for_nodes_s: how long a bundle no live node holds may wait for nodes to join (0 on a local cluster).
        for_grant_s: how long a feasible group may wait for its resources to be free.
    """

    for_nodes_s: float = 0.0
    for_grant_s: float = 120.0

    @classmethod
    def from_config(cls, config: Config) -> PlacementWait:
        timeout = config.cluster.placement_timeout_s
        return cls(for_nodes_s=timeout if config.cluster.ray_address() else 0.0, for_grant_s=timeout)


def bundle_for(spec: ResourceSpec) -> Bundle:
    """The bundle one actor of ``spec`` occupies (``memory`` in bytes, as Ray counts it)."""
    bundle: Bundle = {"CPU": spec.num_cpus, "GPU": spec.num_gpus, **spec.resources}
    if spec.memory_gb:
        bundle["memory"] = float(int(spec.memory_gb * 1024**3))
    return {key: value for key, value in bundle.items() if value}


def summed(bundles: Sequence[Mapping[str, float]]) -> Bundle:
    """Resources of several bundles added key by key (a colocated bundle, or a whole group)."""
    total: Bundle = {}
    for bundle in bundles:
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _fits(bundle: Mapping[str, float], offer: Mapping[str, float]) -> bool:
    return all(offer.get(key, 0.0) >= value for key, value in bundle.items())


def _show(resources: Mapping[str, float]) -> str:
    """``{CPU: 4, GPU: 1, memory: 2.0 GiB}``: resources the way a config names them."""
    parts = [f"{key}: {value / 1024**3:.1f} GiB" if key == "memory" else f"{key}: {value:g}"
             for key, value in sorted(resources.items()) if not key.startswith("node:")]
    return "{" + ", ".join(parts) + "}"


def unmet(bundles: Sequence[Bundle], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why the cluster whose live nodes offer ``nodes`` (total resources each) can never hold ``bundles``, or None.

    Necessary conditions only: each bundle on some single node, all bundles within the cluster's total (whether
    they pack onto the nodes is Ray's to decide, bounded by the grant wait).
    """
    for bundle in bundles:
        if not any(_fits(bundle, node) for node in nodes):
            closest = max(nodes, key=lambda node: sum(node.get(key, 0.0) >= value for key, value in bundle.items()))
            offer = {key: closest.get(key, 0.0) for key in bundle}
            return f"a bundle of {_show(bundle)} fits on no node (the closest offers {_show(offer)})"
    need, have = summed(bundles), summed(nodes)
    if not _fits(need, have):
        offer = {key: have.get(key, 0.0) for key in need}
        return f"{len(bundles)} bundles need {_show(need)} in all, the cluster has {_show(offer)}"
    return None


def live_node_resources() -> list[dict[str, float]]:
    """Total resources of each live node of the connected cluster."""
    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def reserve(bundles: Sequence[Bundle], key: str, wait: PlacementWait, strategy: str = "PACK") -> PlacementGroup:
    """A placement group of ``bundles``, granted; ``key`` (e.g. ``cluster.features``) names their config in errors.

    Raises:
        ConfigError: no live node can hold a bundle, or the cluster's total is too small, even after
            ``wait.for_nodes_s``.
        ActorFailureError: the cluster could hold the group but did not grant it within ``wait.for_grant_s``.
    """
    if not all(bundles):
        raise ConfigError(f"{key}: asks for no resources, and a placement-group bundle needs some; "
                          f"set {key}.num_cpus > 0")
    deadline = time.monotonic() + wait.for_nodes_s
    while (problem := unmet(bundles, live_node_resources())) is not None:
        if time.monotonic() >= deadline:
            raise ConfigError(f"{key}: {problem}; lower {key} or add nodes that offer it")
        logger.info("%s: %s; waiting for nodes to join", key, problem)
        time.sleep(NODE_POLL_S)
    group = placement_group(list(bundles), strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=wait.for_grant_s)
    if not ready:
        remove_placement_group(group)
        raise ActorFailureError(
            f"{key}: {len(bundles)} bundles of {_show(bundles[0])} not granted within {wait.for_grant_s:.0f} s; "
            f"other work holds those resources (ray status): free them or raise cluster.placement_timeout_s"
        )
    return group


def colocated_bundles(config: Config) -> list[Bundle]:
    """Bundle ``i`` of ``colocate``: generation actor ``i``'s resources plus feature worker ``i``'s (either alone
    where one role has more actors than the other)."""
    cluster = config.cluster
    roles = ((bundle_for(cluster.generation), config.generation.num_actors),
             (bundle_for(cluster.features), config.features.num_workers))
    return [summed([bundle for bundle, count in roles if rank < count])
            for rank in range(max(count for _, count in roles))]


def shared_placement_group(config: Config) -> PlacementGroup | None:
    """The placement group generation and feature workers share under ``colocate``; None under ``split``
    (each group then reserves its own)."""
    if config.cluster.placement != "colocate":
        return None
    return reserve(colocated_bundles(config), "cluster.generation + cluster.features (cluster.placement: colocate)",
                   PlacementWait.from_config(config))
