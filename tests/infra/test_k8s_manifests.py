"""KubeRay manifests: they parse, validate against the vendored CRD schemas, and agree with the configs they run."""

from __future__ import annotations

import ast
import copy
import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from system.config import Config, ResourceSpec, load_config, overrides_from_args
from tests.conftest import REPO_ROOT
from tests.infra.manifests import (
    K8S_DIR,
    OVERLAYS,
    Manifest,
    apply_json_patch,
    crd_schema,
    find,
    iter_containers,
    load_documents,
    rendered,
)

RAY_KINDS = ("RayCluster", "RayJob", "RayService")
SECRET_ENV = re.compile(r"(^|_)(TOKEN|PASSWORD|SECRET|ACCESS_KEY|API_KEY|CREDENTIALS?)(_|$)")
SAMPLES_DIR = Path(__file__).parent / "data" / "kuberay_samples"


def schema_errors(doc: Manifest) -> list[str]:
    validator = jsonschema.Draft7Validator(crd_schema(doc["kind"]))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(doc)]


def entrypoint_config(entrypoint: str) -> tuple[str, Config]:
    """The ``--config`` file named by an ``activealign run`` entrypoint and the config it loads (with overrides)."""
    tokens = shlex.split(entrypoint)
    assert tokens[:2] == ["activealign", "run"], entrypoint
    assert tokens[2] == "--config", entrypoint
    return tokens[3], load_config(REPO_ROOT / tokens[3], overrides_from_args(tokens[4:]))


def ray_cluster_spec(doc: Manifest) -> dict[str, Any]:
    return {"RayCluster": lambda: doc["spec"], "RayService": lambda: doc["spec"]["rayClusterConfig"]}[doc["kind"]]()


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU/GPU quantity (``"4"``, ``"500m"``) as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def node_capacity(group: dict[str, Any]) -> dict[str, float]:
    """What one pod of a worker group offers Ray: CPU, GPU (from container limits) and custom resources."""
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    capacity = {"CPU": quantity(limits["cpu"]), "GPU": quantity(limits.get("nvidia.com/gpu", 0))}
    capacity.update({name: quantity(amount) for name, amount in group.get("resources", {}).items()})
    return capacity


def actor_demand(spec: ResourceSpec) -> dict[str, float]:
    demand = {"CPU": spec.num_cpus, "GPU": spec.num_gpus, **spec.resources}
    return {name: amount for name, amount in demand.items() if amount > 0}


def group_sizes(config: Config) -> dict[str, int]:
    """How many actors each ``cluster.<group>`` stands for at most."""
    return {
        "generation": config.generation.num_actors,
        "features": config.features.num_workers,
        "selector": 1,
        "trainer": config.train.num_workers,
        "oracle": config.oracle.max_replicas,
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object_once(overlay: str) -> None:
    docs = rendered(overlay)
    keys = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
    assert len(keys) == len(set(keys))
    assert {kind for kind, _ in keys} >= {*RAY_KINDS, "Service", "Deployment", "StatefulSet", "PersistentVolumeClaim"}
    assert all(doc["metadata"].get("namespace") == "activealign" for doc in docs if doc["kind"] != "Namespace")
    assert all(doc["metadata"]["labels"]["activealign.dev/setup"] == overlay for doc in docs)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: the Kustomize cross-check needs it")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR / "overlays" / overlay)], capture_output=True, text=True, check=True
    )
    by_kustomize = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    by_us = {(d["kind"], d["metadata"]["name"]): d for d in rendered(overlay)}
    assert by_us == by_kustomize


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_objects_validate_against_kuberay_schemas(overlay: str) -> None:
    for doc in rendered(overlay):
        if doc["kind"] in RAY_KINDS:
            assert schema_errors(doc) == [], (overlay, doc["kind"])


def test_schemas_accept_upstream_samples_and_reject_mistakes() -> None:
    samples = [doc for path in sorted(SAMPLES_DIR.glob("*.yaml")) for doc in load_documents(path)]
    assert {doc["kind"] for doc in samples} >= set(RAY_KINDS)
    for doc in samples:
        if doc["kind"] in RAY_KINDS:
            assert schema_errors(doc) == [], doc["metadata"]["name"]

    cluster = find(rendered("7b"), "RayCluster")
    mistakes = [
        [{"op": "add", "path": "/spec/workerGroupSpecs/0/maxReplica", "value": 2}],
        [{"op": "replace", "path": "/spec/workerGroupSpecs/0/maxReplicas", "value": "two"}],
        [{"op": "remove", "path": "/spec/headGroupSpec/template"}],
        [{"op": "replace", "path": "/spec/authOptions/mode", "value": "password"}],
        [{"op": "replace", "path": "/spec/workerGroupSpecs/0/resources/generation_node", "value": 4}],
        [{"op": "add", "path": "/spec/headGroupSpec/template/spec/containers/0/imagePullPolicy2", "value": "x"}],
    ]
    for operations in mistakes:
        broken = copy.deepcopy(cluster)
        apply_json_patch(broken, operations)
        assert schema_errors(broken), operations


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_entrypoint_loads_its_config(overlay: str) -> None:
    job = find(rendered(overlay), "RayJob")
    config_path, config = entrypoint_config(job["spec"]["entrypoint"])
    assert config_path == {"small": "configs/tiny.yaml", "7b": "configs/cluster-7b.yaml"}[overlay]
    assert config.cluster.address == "auto"
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == find(rendered(overlay), "RayCluster")["metadata"]["name"]


def assert_groups_fit(config: Config, groups: list[dict[str, Any]], names: list[str], where: str) -> None:
    """Every ``cluster.<name>`` group's actors fit on the worker groups (custom resources pin them to one)."""
    sizes = group_sizes(config)
    for name in names:
        spec: ResourceSpec = getattr(config.cluster, name)
        demand = actor_demand(spec)
        custom = set(spec.resources)
        if spec.num_gpus > 0:
            assert custom, f"{where}: cluster.{name} asks for GPUs without a custom resource pinning its node type"
        hosts = [g for g in groups if custom <= set(g.get("resources", {}))] if custom else groups
        assert len(hosts) == (1 if custom else len(groups)), (where, name)
        fits = 0
        for group in hosts:
            capacity = node_capacity(group)
            per_node = min(math.floor(capacity.get(key, 0) / amount + 1e-9) for key, amount in demand.items())
            fits += per_node * group["maxReplicas"]
        assert fits >= sizes[name], f"{where}: cluster.{name}: {sizes[name]} actors asking {demand}, room for {fits}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_groups_cover_every_config_group(overlay: str) -> None:
    docs = rendered(overlay)
    _, config = entrypoint_config(find(docs, "RayJob")["spec"]["entrypoint"])
    groups = ray_cluster_spec(find(docs, "RayCluster"))["workerGroupSpecs"]
    names = list(group_sizes(config))
    assert_groups_fit(config, groups, names, overlay)
    asked = {key for name in names for key in getattr(config.cluster, name).resources}
    offered = {key for group in groups for key in group.get("resources", {})}
    assert offered == asked, f"{overlay}: node types nobody asks for: {offered - asked}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayservice_runs_the_oracle_app_on_its_nodes(overlay: str) -> None:
    service = find(rendered(overlay), "RayService")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve_config["http_options"]["port"] == 8000
    (app,) = serve_config["applications"]
    module_name, _, attribute = app["import_path"].partition(":")
    module = ast.parse((REPO_ROOT / (module_name.replace(".", "/") + ".py")).read_text())
    assert attribute in [node.name for node in module.body if isinstance(node, ast.FunctionDef)]
    config = load_config(REPO_ROOT / app["args"]["config"], app["args"].get("overrides", []))
    assert_groups_fit(config, service["spec"]["rayClusterConfig"]["workerGroupSpecs"], ["oracle"], overlay)
    head_ports = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    assert 8000 in [port["containerPort"] for port in head_ports]


def test_gpu_setup_gives_trainer_and_generation_gpus() -> None:
    docs = rendered("7b")
    _, config = entrypoint_config(find(docs, "RayJob")["spec"]["entrypoint"])
    assert config.train.use_gpu and config.cluster.trainer.num_gpus >= 1
    groups = {g["groupName"]: node_capacity(g) for g in find(docs, "RayCluster")["spec"]["workerGroupSpecs"]}
    assert all(groups[name]["GPU"] >= 1 for name in ("generation", "features", "training", "oracle"))
    assert all(capacity["GPU"] == 0 for capacity in [node_capacity(find(docs, "RayCluster")["spec"]["headGroupSpec"] | {
        "maxReplicas": 1})])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_run_dir_and_tracking_point_into_the_cluster(overlay: str) -> None:
    docs = rendered(overlay)
    _, config = entrypoint_config(find(docs, "RayJob")["spec"]["entrypoint"])
    head = find(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    mounts = [mount["mountPath"] for mount in head["volumeMounts"]]
    assert any(config.loop.run_dir.startswith(mount + "/") for mount in mounts), config.loop.run_dir
    match = re.fullmatch(r"http://(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc:(?P<port>\d+)", config.tracking.uri)
    assert match, config.tracking.uri
    service = find(docs, "Service", match["svc"])
    assert service["metadata"]["namespace"] == match["ns"]
    assert int(match["port"]) in [port["port"] for port in service["spec"]["ports"]]
    server_args = find(docs, "Deployment", match["svc"])["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--serve-artifacts" in server_args
    location = config.tracking.artifact_location
    assert location is None or location.startswith("mlflow-artifacts:/"), "Ray pods hold no storage credentials"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_defaults(overlay: str) -> None:
    docs = rendered(overlay)
    assert not [doc for doc in docs if doc["kind"] in ("Secret", "Ingress")]
    for doc in docs:
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]["name"]
        if doc["kind"] in ("RayCluster", "RayService"):
            spec = ray_cluster_spec(doc)
            assert spec["authOptions"]["mode"] == "token"
            assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
        for container in iter_containers(doc):
            for env in container.get("env", []):
                if SECRET_ENV.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], (doc["kind"], env["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_oracle_token_reaches_every_oracle_host(overlay: str) -> None:
    docs = rendered(overlay)
    _, config = entrypoint_config(find(docs, "RayJob")["spec"]["entrypoint"])
    cluster_specs = [ray_cluster_spec(find(docs, kind)) for kind in ("RayCluster", "RayService")]
    for spec in cluster_specs:
        oracle_pods = [spec["headGroupSpec"]] + [g for g in spec["workerGroupSpecs"] if "oracle_node" in g["resources"]]
        for pod in oracle_pods:
            env = {item["name"]: item for item in pod["template"]["spec"]["containers"][0]["env"]}
            assert env[config.oracle.token_env]["valueFrom"]["secretKeyRef"]["name"] == "activealign-oracle-token"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_and_ray_version_match(overlay: str) -> None:
    docs = rendered(overlay)
    for kind in ("RayCluster", "RayService"):
        spec = ray_cluster_spec(find(docs, kind))
        assert spec["rayVersion"] == ray.__version__
        images = {c["image"] for c in iter_containers(spec)}
        assert images == {"activealign:0.1.0-cpu" if overlay == "small" else "activealign:0.1.0-gpu"}
    for image in {c["image"] for doc in docs for c in iter_containers(doc)}:
        assert ":" in image and not image.endswith(":latest"), image


def test_readme_commands_name_real_objects() -> None:
    readme = (REPO_ROOT / "infra" / "README.md").read_text()
    docs = rendered("7b")
    cluster, service = find(docs, "RayCluster")["metadata"]["name"], find(docs, "RayService")["metadata"]["name"]
    # KubeRay names the head service <cluster>-head-svc and the Serve service <rayservice>-serve-svc.
    assert f"svc/{cluster}-head-svc" in readme and f"svc/{service}-serve-svc" in readme
    assert f"svc/{find(docs, 'Service', 'mlflow')['metadata']['name']}" in readme
    assert f"job/{find(docs, 'RayJob')['metadata']['name']}" in readme
    secrets = {
        ref["name"] for doc in docs for container in iter_containers(doc) for env in container.get("env", [])
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    }
    for name in secrets:
        assert f"secret generic {name} " in readme, f"README does not say how to create Secret {name}"
    for path in re.findall(r"(?:infra|configs)/[\w./-]+\.(?:yaml|py|sh|txt)", readme):
        assert (REPO_ROOT / path).exists(), path
