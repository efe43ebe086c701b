"""Placement groups: one bundle per actor, checked against the cluster before anything waits on them.

``cluster.placement`` decides how the loop's actor groups share the cluster:

* ``split``: every actor group (generation fleet, feature workers, selector, trainer group) reserves a placement
  group of its own, bundle ``i`` holding actor ``i`` with ``cluster.<group>`` resources.
* ``colocate`` (OpenRLHF's hybrid engine): generation actor ``i`` and feature worker ``i`` share bundle ``i`` of one
  placement group, whose bundle holds both roles' resources summed (e.g. ``0.5 + 0.5`` of one GPU), so both run
  on the same node and device; the selector and the trainer group keep their own groups.

Ray leaves a placement group it cannot place PENDING forever, and every actor in it with it. :func:`reserve`
checks each bundle fits on one live node and all bundles fit in the cluster's total; a bundle that never fits
stops the command with a :class:`~system.errors.ConfigError` naming the config key (exit 2), and a group that fits
but is not granted in time (other work holds the resources) with an :class:`~system.errors.ActorFailureError`
(exit 3). The local cluster cannot grow, so there the check runs first and decides at once. A joined cluster may
grow: an autoscaler adds the nodes a pending group asks for, and only a group that exists asks, so there the group
is reserved first and the check runs only when it was not granted within ``cluster.placement_timeout_s``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from system.config import Config, ResourceSpec
from system.errors import ActorFailureError, ConfigError

Bundle = dict[str, float]


@dataclass(frozen=True)
class PlacementWait:
    """How a reservation waits.

    Attributes:
        cluster_can_grow: nodes may join while the group waits (a joined cluster, perhaps autoscaled); False for the
            local cluster, whose nodes are all there.
        timeout_s: how long the group may wait to be granted.
    """

    cluster_can_grow: bool = False
    timeout_s: float = 120.0

    @classmethod
    def from_config(cls, config: Config) -> PlacementWait:
        return cls(config.cluster.ray_address() is not None, config.cluster.placement_timeout_s)


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
        ConfigError: no live node can hold a bundle, or the cluster's total is too small (on a cluster that can
            grow: still so after ``wait.timeout_s``).
        ActorFailureError: the cluster could hold the group but did not grant it within ``wait.timeout_s``.
    """
    if not all(bundles):
        raise ConfigError(f"{key}: asks for no resources, and a placement-group bundle needs some; "
                          f"set {key}.num_cpus > 0")
    if not wait.cluster_can_grow:
        _refuse_if_unmet(bundles, key)
    group = placement_group(list(bundles), strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=wait.timeout_s)
    if ready:
        return group
    remove_placement_group(group)
    _refuse_if_unmet(bundles, key, f" (no such node joined within {wait.timeout_s:.0f} s)")
    raise ActorFailureError(
        f"{key}: {len(bundles)} bundles of {_show(bundles[0])} not granted within {wait.timeout_s:.0f} s; "
        f"other work holds those resources (ray status): free them or raise cluster.placement_timeout_s"
    )


def _refuse_if_unmet(bundles: Sequence[Bundle], key: str, waited: str = "") -> None:
    problem = unmet(bundles, live_node_resources())
    if problem is not None:
        raise ConfigError(f"{key}: {problem}{waited}; lower {key} or add nodes that offer it")


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
