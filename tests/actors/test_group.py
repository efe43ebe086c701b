"""ActorGroup on a real local Ray cluster: order of results, retries after a kill, placement groups."""

from __future__ import annotations

import os
import time

import pytest
import ray

from actors.group import ActorGroup
from system.config import ResourceSpec, RetryConfig
from system.errors import ActorFailureError
from system.selection.shards import shard_evenly


class DiesStarting:
    """A role whose ``setup`` kills its own process the first time (every time with ``always``)."""

    def __init__(self, rank: int, marker_dir: str, always: bool = False) -> None:
        self.marker = os.path.join(marker_dir, f"died-{rank}")
        self.always = always

    def setup(self) -> int:
        if self.always or not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return os.getpid()


def test_an_actor_that_dies_in_setup_is_restarted_or_named_in_one_error(ray_cluster, tmp_path):
    group = ActorGroup(DiesStarting, 2, ResourceSpec(num_cpus=0.1), actor_args=(str(tmp_path),),
                       retries=RetryConfig(max_restarts=1), name="starters")
    pids = group.setup()  # each actor died once in setup(), was restarted by Ray and set up again
    assert len(set(pids)) == 2 and all(os.path.exists(tmp_path / f"died-{rank}") for rank in range(2))
    group.shutdown()
    doomed = ActorGroup(DiesStarting, 1, ResourceSpec(num_cpus=0.1), actor_args=(str(tmp_path), True),
                        retries=RetryConfig(max_restarts=0), name="doomed")
    with pytest.raises(ActorFailureError, match=r"doomed actor 0 died .* raise cluster\.retries\.max_restarts"):
        doomed.setup()
    doomed.shutdown()


class Squarer:
    """A role whose ``square`` kills its own process on a shard holding -1 the first time it sees it, and on one
    holding -2 every time."""

    def __init__(self, rank: int, marker_dir: str) -> None:
        self.rank = rank
        self.marker_dir = marker_dir
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def square(self, shard: list[int]) -> tuple[int, list[int]]:
        if self.setups == 0:
            raise RuntimeError("setup() was not run")
        marker = os.path.join(self.marker_dir, "killed")
        if -2 in shard or (-1 in shard and not os.path.exists(marker)):
            open(marker, "w").close()
            os._exit(1)
        return self.rank, [value * value for value in shard]

    def pid(self) -> int:
        return os.getpid()

    def mark(self, shard: list[int]) -> list[int]:
        """Leave a file per value (the call ran), then return the shard."""
        for value in shard:
            open(os.path.join(self.marker_dir, f"ran-{value}"), "w").close()
        return shard


@pytest.mark.parametrize("num_items,num_shards", [(0, 2), (1, 3), (7, 2), (10, 4)])
def test_shard_evenly_keeps_order_and_balance(num_items, num_shards):
    items = list(range(num_items))
    shards = shard_evenly(items, num_shards)
    assert len(shards) == num_shards
    assert [x for shard in shards for x in shard] == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_map_shards_keeps_order(ray_cluster, tmp_path):
    group = ActorGroup(Squarer, 2, ResourceSpec(num_cpus=0.5), actor_args=(str(tmp_path),), name="squarers")
    group.setup()
    shards = shard_evenly(list(range(11)), 5)
    results = group.map_shards("square", shards)
    assert [x for _, squares in results for x in squares] == [x * x for x in range(11)]
    assert [rank for rank, _ in results] == [0, 1, 0, 1, 0]
    group.shutdown()


def test_submitted_shards_run_before_anyone_waits_and_result_keeps_their_order(ray_cluster, tmp_path):
    group = ActorGroup(Squarer, 2, ResourceSpec(num_cpus=0.5), actor_args=(str(tmp_path),), name="markers")
    group.setup()
    call = group.submit_shards("mark", [[3], [1, 4], [2]])  # returns with the calls in flight
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ran-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(path.name for path in tmp_path.glob("ran-*")) == ["ran-1", "ran-2", "ran-3", "ran-4"]
    assert call.result() == [[3], [1, 4], [2]]
    group.shutdown()


def test_failed_shard_is_retried_on_another_actor(ray_cluster, tmp_path):
    group = ActorGroup(Squarer, 2, ResourceSpec(num_cpus=0.5), actor_args=(str(tmp_path),),
                       retries=RetryConfig(max_restarts=1))
    group.setup()
    pids_before = group.call_all("pid")
    results = group.map_shards("square", [[1, 2], [3, -1], [4]])
    assert results == [(0, [1, 4]), (0, [9, 1]), (0, [16])]  # shard 1 died on actor 1, reran on actor 0
    assert (tmp_path / "killed").exists()
    pids_after = group.call_all("pid")  # the restarted actor is set up again and serves work
    assert pids_after[0] == pids_before[0] and pids_after[1] != pids_before[1]
    assert group.map_shards("square", [[5], [6]]) == [(0, [25]), (1, [36])]
    group.shutdown()


def test_call_each_reruns_a_killed_call_on_the_restarted_actor_and_gives_up_after_max_attempts(ray_cluster, tmp_path):
    group = ActorGroup(Squarer, 2, ResourceSpec(num_cpus=0.5), actor_args=(str(tmp_path),),
                       retries=RetryConfig(max_restarts=3, max_attempts=2), name="squarers")
    group.setup()
    pid_before = group.call_all("pid")[1]
    assert group.call_each("square", [([2],), ([3, -1],)]) == [(0, [4]), (1, [9, 1])]  # same actor, restarted
    assert group.call_all("pid")[1] != pid_before
    with pytest.raises(ActorFailureError, match=r"squarers: square failed 2 times \(last on actor 1") as failure:
        group.call_each("square", [([2],), ([-2],)])
    assert failure.value.exit_code == 3
    group.shutdown()


def test_placement_group_hosts_one_bundle_per_actor(ray_cluster, tmp_path):
    group = ActorGroup(Squarer, 2, ResourceSpec(num_cpus=0.5), actor_args=(str(tmp_path),), name="pg")
    group.setup()
    group_placement = group._placement_group
    table = ray.util.placement_group_table(group_placement)
    assert table["state"] == "CREATED" and len(table["bundles"]) == 2
    assert group.map_shards("square", [[2], [3]]) == [(0, [4]), (1, [9])]
    group.shutdown()
    assert ray.util.placement_group_table(group_placement)["state"] == "REMOVED"


def test_colocated_roles_share_one_bundle_per_rank(ray_cluster, tmp_path):
    from actors.placement import shared_placement_group
    from system.config import load_config

    config = load_config("configs/tiny.yaml", ["cluster.placement=colocate", "generation.num_actors=2",
                                               "features.num_workers=2", "cluster.generation.num_cpus=0.5",
                                               "cluster.features.num_cpus=0.25"])
    shared = shared_placement_group(config)
    bundles = ray.util.placement_group_table(shared)["bundles"]
    assert [bundle["CPU"] for bundle in bundles.values()] == [0.75, 0.75]
    first = ActorGroup(Squarer, 2, config.cluster.generation, (str(tmp_path),), placement_group=shared)
    second = ActorGroup(Squarer, 2, config.cluster.features, (str(tmp_path),), placement_group=shared)
    first.setup()
    second.setup()  # fits only because each bundle hosts one actor of each role
    assert first.map_shards("square", [[1], [2]]) == second.map_shards("square", [[1], [2]])
    first.shutdown()
    second.shutdown()
    ray.util.remove_placement_group(shared)
    assert shared_placement_group(config.model_copy(update={"cluster": config.cluster.model_copy(
        update={"placement": "split"})})) is None
