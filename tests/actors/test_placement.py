"""Placement-group bundles and the feasibility check that keeps an impossible group from hanging the start."""

from __future__ import annotations

import pytest
import ray

from actors.group import ActorGroup
from actors.placement import PlacementWait, bundle_for, colocated_bundles, reserve, unmet
from system.config import ResourceSpec, load_config
from system.errors import ActorFailureError, ConfigError
from tests.conftest import REPO_ROOT

GPU_NODE = {"CPU": 16.0, "GPU": 2.0, "memory": 64.0 * 1024**3, "generation_node": 2.0}
CPU_NODE = {"CPU": 8.0, "memory": 32.0 * 1024**3}


def test_bundle_holds_what_the_actor_asks_for_memory_in_bytes():
    spec = ResourceSpec(num_cpus=4, num_gpus=0.5, memory_gb=2, resources={"generation_node": 1})
    assert bundle_for(spec) == {"CPU": 4.0, "GPU": 0.5, "memory": 2.0 * 1024**3, "generation_node": 1.0}
    assert bundle_for(ResourceSpec(num_cpus=0.25)) == {"CPU": 0.25}


def test_colocated_bundle_i_sums_generation_actor_i_and_feature_worker_i():
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [
        "generation.num_actors=3", "features.num_workers=2", "cluster.generation.num_cpus=1",
        "cluster.generation.num_gpus=0.5", "cluster.features.num_cpus=0.5", "cluster.features.num_gpus=0.5"])
    assert colocated_bundles(config) == [{"CPU": 1.5, "GPU": 1.0}, {"CPU": 1.5, "GPU": 1.0}, {"CPU": 1.0, "GPU": 0.5}]


@pytest.mark.parametrize(("bundles", "problem"), [
    ([{"CPU": 4.0, "GPU": 1.0}] * 4, None),
    ([{"CPU": 4.0, "GPU": 3.0}], "a bundle of {CPU: 4, GPU: 3} fits on no node"),
    ([{"CPU": 1.0, "features_node": 1.0}], "a bundle of {CPU: 1, features_node: 1} fits on no node"),
    ([{"CPU": 1.0, "memory": 40.0 * 1024**3}], None),
    ([{"CPU": 1.0, "GPU": 1.0}] * 5, "5 bundles need {CPU: 5, GPU: 5} in all, the cluster has"),
])
def test_unmet_names_the_bundle_no_node_can_hold(bundles, problem):
    found = unmet(bundles, [GPU_NODE, GPU_NODE, CPU_NODE])
    assert found is None if problem is None else found is not None and found.startswith(problem)


@pytest.mark.parametrize("spec", [ResourceSpec(num_cpus=1, num_gpus=1), ResourceSpec(resources={"features_node": 1}),
                                  ResourceSpec(num_cpus=0)])
def test_a_group_the_local_cluster_cannot_hold_stops_at_once_naming_its_key(ray_cluster, tmp_path, spec):
    group = ActorGroup(object, 1, spec, name="features")
    with pytest.raises(ConfigError, match=r"^cluster\.features: ") as raised:
        group.setup()
    assert "\n" not in str(raised.value)
    assert not [pg for pg in ray.util.placement_group_table().values() if pg["state"] == "PENDING"]


def test_on_a_cluster_that_can_grow_the_group_asks_first_and_is_refused_after_the_timeout(ray_cluster):
    """An autoscaler adds nodes only for a group that exists and waits, so a joined cluster reserves before it
    checks; a bundle still fitting no node after the wait is a ConfigError, busy resources an ActorFailureError."""
    grows = PlacementWait(cluster_can_grow=True, timeout_s=2)
    with pytest.raises(ConfigError, match=r"^cluster\.trainer: a bundle of \{CPU: 1, GPU: 1\} fits on no node .*"
                                          r"\(no such node joined within 2 s\)"):
        reserve([{"CPU": 1.0, "GPU": 1.0}], "cluster.trainer", grows)
    holder = reserve([{"CPU": 7.0}], "cluster.generation", grows)
    try:
        with pytest.raises(ActorFailureError, match=r"^cluster\.features: 1 bundles of \{CPU: 2\} not granted "
                                                    r"within 2 s"):
            reserve([{"CPU": 2.0}], "cluster.features", grows)
    finally:
        ray.util.remove_placement_group(holder)
    assert not [pg for pg in ray.util.placement_group_table().values() if pg["state"] == "PENDING"]
