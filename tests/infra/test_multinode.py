"""Multi-node scheduling on one machine: a real Ray head and two worker nodes started with ``ray start``.

Worker nodes advertise the custom resources of the ``small`` overlay's node types (standing in for GPU nodes);
jobs go in through ``ray job submit`` with the same config overrides the overlay's RayJob runs, and the test
checks that every actor group landed on the node type it asked for.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_actors, list_nodes

from system.config import load_config, overrides_from_args
from tests.conftest import REPO_ROOT, free_port
from tests.infra.local_cluster import RAY_BIN, LocalRayCluster, new_temp_dir
from tests.infra.manifests import find, rendered
from tests.infra.mlflow_server import running_mlflow_server

pytestmark = pytest.mark.multinode

# Which worker node hosts which node type of the small overlay: two nodes, two node types each.
NODE_GROUPS = {"node-a": ("generation", "oracle"), "node-b": ("features", "training")}


def overlay_node_resources() -> dict[str, dict[str, float]]:
    """Per test node, the custom resources the small overlay's worker groups advertise (summed)."""
    groups = {g["groupName"]: g["resources"] for g in find(rendered("small"), "RayCluster")["spec"]["workerGroupSpecs"]}
    assert sorted(groups) == sorted(name for names in NODE_GROUPS.values() for name in names)
    return {
        node: {key: float(value) for name in names for key, value in groups[name].items()}
        for node, names in NODE_GROUPS.items()
    }


def overlay_entrypoint() -> list[str]:
    """The small overlay's RayJob entrypoint, tokenised."""
    return shlex.split(find(rendered("small"), "RayJob")["spec"]["entrypoint"])


def with_option(tokens: list[str], option: str, value: str) -> list[str]:
    """``tokens`` with ``option``'s value replaced (the option must be there)."""
    index = tokens.index(option)
    return [*tokens[: index + 1], value, *tokens[index + 2 :]]


def submit_job(
    cluster: LocalRayCluster, entrypoint: list[str], working_dir: Path, timeout_s: float
) -> tuple[str, str]:
    """``ray job submit`` (retrying while the job agent starts); ``(logs, job_id)`` of a job that SUCCEEDED."""
    submission_id = f"test-{time.time_ns()}"
    command = [
        str(RAY_BIN), "job", "submit", "--address", cluster.dashboard_url, "--submission-id", submission_id,
        "--working-dir", str(working_dir), "--", *entrypoint,
    ]
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(command, capture_output=True, text=True, env=cluster.env, timeout=timeout_s)
        if "No available agent" not in result.stdout + result.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    client = JobSubmissionClient(cluster.dashboard_url)
    status = client.get_job_status(submission_id)
    logs = client.get_job_logs(submission_id)
    message = client.get_job_info(submission_id).message
    assert status == JobStatus.SUCCEEDED, f"job {status}: {message}\n{logs[-6000:]}\n{result.stderr[-1500:]}"
    return logs, client.get_job_info(submission_id).job_id


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{RAY_BIN.parent}{os.pathsep}{os.environ['PATH']}"}
    local = LocalRayCluster(new_temp_dir(), env, num_cpus_per_node=4)
    try:
        local.start(overlay_node_resources())
        yield local
    finally:
        leaked = local.stop()
        assert leaked == [], f"processes left behind by the test cluster: {leaked}"
        shutil.rmtree(local.temp_dir, ignore_errors=True)


def test_cluster_has_the_intended_nodes(cluster: LocalRayCluster) -> None:
    nodes = [node for node in list_nodes(address=cluster.dashboard_url, detail=True) if node.state == "ALIVE"]
    assert len(nodes) == 3
    advertised = sorted(
        sorted((key, value) for key, value in node.resources_total.items() if key.endswith("_node")) for node in nodes
    )
    expected = sorted([[], *(sorted(resources.items()) for resources in overlay_node_resources().values())])
    assert advertised == expected


def test_actor_groups_land_on_their_node_types(cluster: LocalRayCluster, tmp_path: Path) -> None:
    tokens = overlay_entrypoint()
    config_args = tokens[tokens.index("--config") + 1 :]
    logs, _ = submit_job(
        cluster, ["python", "tests/infra/data/placement_probe.py", *config_args], REPO_ROOT, timeout_s=300
    )
    placement = json.loads(next(line for line in logs.splitlines() if line.startswith("PLACEMENT "))[10:])
    node_of_resource = node_type_resources(cluster)
    expected_node = {"generation": "generation_node", "features": "features_node", "trainer": "training_node",
                     "oracle": "oracle_node"}
    for group, resource in expected_node.items():
        assert set(placement[group]) == {node_of_resource[resource]}, (group, placement)
    assert node_of_resource["generation_node"] != node_of_resource["features_node"]
    assert len(placement["features"]) == 2 and len(placement["selector"]) == 1


def node_type_resources(cluster: LocalRayCluster) -> dict[str, str]:
    """``{"generation_node": node_id, ...}``: which node advertises each node-type resource."""
    return {
        key: node.node_id
        for node in list_nodes(address=cluster.dashboard_url, detail=True)
        for key in node.resources_total
        if key.endswith("_node")
    }


@pytest.mark.timeout(2400)
def test_active_loop_job_runs_on_the_node_types(cluster: LocalRayCluster, tmp_path: Path) -> None:
    """The small overlay's RayJob entrypoint, submitted as is (local run dir, MLflow server and oracle port)."""
    with running_mlflow_server(tmp_path) as (mlflow_url, _):
        tokens = with_option(overlay_entrypoint(), "--loop.run_dir", str(tmp_path / "run"))
        tokens = with_option(tokens, "--tracking.uri", mlflow_url)
        _, job_id = submit_job(cluster, [*tokens, "--oracle.port", str(free_port())], REPO_ROOT, timeout_s=2000)
        config = load_config(REPO_ROOT / tokens[3], overrides_from_args(tokens[4:]))
        client = MlflowClient(tracking_uri=mlflow_url)
        experiment = client.get_experiment_by_name(config.tracking.experiment)
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.params["cluster.address"] == "auto" and run.data.metrics
        rounds = {m.step for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)}
        assert len(rounds) >= config.loop.rounds

    node_of = node_type_resources(cluster)
    seen: set[str] = set()
    for actor in list_actors(address=cluster.dashboard_url, detail=True, limit=10_000,
                             filters=[("job_id", "=", job_id)]):
        # Inside a placement group Ray renames a resource to <name>_group_[<bundle>_]<pg id>.
        asked = {key.split("_group_")[0] for key in actor.required_resources if key.split("_group_")[0] in node_of}
        for resource in asked:
            assert actor.node_id == node_of[resource], (actor.class_name, resource)
        seen |= asked
    assert seen == set(node_of), f"actor groups that never asked for their node type: {set(node_of) - seen}"
