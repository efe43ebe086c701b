"""Where the loop's start-up puts its actors, read back from Ray: each actor's placement group and node (its own
runtime context), each bundle's node (the placement-group table) and use (Ray's per-bundle resources
``CPU_group_<i>_<group id>``), for ``colocate`` and ``split``; and a placement the cluster cannot hold stopping the
start with one line naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from jobs.loop_setup import RayParts
from system.config import Config
from system.errors import ConfigError
from system.loop import LoopParts
from system.run_state import RoundState
from tests.jobs.test_active_loop import shared_model, small_config  # noqa: F401 - the module's tiny model fixture

GENERATION_CPUS, FEATURE_CPUS = 1.0, 0.5


def placement_config(tmp: Path, model_dir: Path, placement: str, **overrides: object) -> Config:
    return small_config(tmp, model_dir, **{
        "cluster.placement": placement, "generation.num_actors": 2, "features.num_workers": 2,
        "cluster.generation.num_cpus": GENERATION_CPUS, "cluster.features.num_cpus": FEATURE_CPUS,
        "tracking.enabled": False, **overrides})


def _where(_actor_self: Any) -> tuple[str | None, str]:
    context = ray.get_runtime_context()
    return context.get_placement_group_id(), context.get_node_id()


def placement_of(actor: Any) -> tuple[str, str]:
    """(placement group, node) of ``actor``, as Ray's runtime context inside the actor reports them."""
    group_id, node_id = ray.get(actor.__ray_call__.remote(_where))
    assert group_id is not None
    return group_id, node_id


def cpus_used_per_bundle(group_id: str) -> list[float]:
    """CPUs the actors in each bundle of ``group_id`` hold, from Ray's resource table (bundle ``i`` is the
    resource ``CPU_group_<i>_<group id>``)."""
    bundles = ray.util.placement_group_table()[group_id]["bundles"]
    total, free = ray.cluster_resources(), ray.available_resources()
    names = [f"CPU_group_{index}_{group_id}" for index in sorted(bundles)]
    return [total[name] - free.get(name, 0.0) for name in names]


def roles(parts: LoopParts) -> dict[str, list[Any]]:
    selection: Any = parts.selector
    return {"generation": parts.fleet.group.actors, "features": selection.features.workers,
            "selector": [selection.selector.actor], "trainer": parts.trainer.group.actors}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("placement", ["colocate", "split"])
def test_loop_start_places_its_actors_as_configured(ray_cluster, shared_model, tmp_path, placement):  # noqa: F811
    config = placement_config(tmp_path, shared_model, placement)
    parts = RayParts(config, Path(config.loop.run_dir))
    try:
        started = roles(parts.start(RoundState()))
        where = {role: [placement_of(actor) for actor in actors] for role, actors in started.items()}
        groups = {role: [group for group, _ in places] for role, places in where.items()}
        table = ray.util.placement_group_table()
        assert all(table[group]["state"] == "CREATED" for ids in groups.values() for group in ids)
        for role in ("generation", "features"):  # actor i on the node of bundle i
            assert [node for _, node in where[role]] == [table[group]["bundles_to_node_id"][rank]
                                                        for rank, (group, _) in enumerate(where[role])]
        assert {role: len(set(ids)) for role, ids in groups.items()} == dict.fromkeys(groups, 1)  # one group per role
        generation, features = groups["generation"][0], groups["features"][0]
        if placement == "colocate":
            # one group, two bundles, each filled by one generation actor and one feature worker
            assert generation == features
            assert cpus_used_per_bundle(generation) == [GENERATION_CPUS + FEATURE_CPUS] * 2
        else:
            assert cpus_used_per_bundle(generation) == [GENERATION_CPUS] * 2
            assert cpus_used_per_bundle(features) == [FEATURE_CPUS] * 2
        distinct = {ids[0] for ids in groups.values()}  # the selector and the trainer group have their own
        assert len(distinct) == (3 if placement == "colocate" else 4)
    finally:
        parts.shutdown()
    assert all(table["state"] == "REMOVED" for table in ray.util.placement_group_table().values())


def test_a_colocated_bundle_no_node_holds_stops_the_start_naming_the_keys(ray_cluster, shared_model, tmp_path):  # noqa: F811
    config = placement_config(tmp_path, shared_model, "colocate", **{"cluster.features.num_gpus": 1})
    parts = RayParts(config, Path(config.loop.run_dir))
    try:
        with pytest.raises(ConfigError, match=r"^cluster\.generation \+ cluster\.features \(cluster\.placement: "
                                              r"colocate\): a bundle of \{CPU: 1\.5, GPU: 1\} fits on no node"):
            parts.start(RoundState())
    finally:
        parts.shutdown()
