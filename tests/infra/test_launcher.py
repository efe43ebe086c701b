"""Ray cluster launcher configs (AWS, GCP): valid for Ray's own validator and the same node types as KubeRay."""

from __future__ import annotations

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import fillout_defaults, validate_config

from tests.conftest import REPO_ROOT
from tests.infra.manifests import find, rendered

LAUNCHERS = {cloud: REPO_ROOT / "infra" / "launcher" / f"{cloud}.yaml" for cloud in ("aws", "gcp")}


def launcher(cloud: str) -> dict:
    return yaml.safe_load(LAUNCHERS[cloud].read_text())


def kuberay_groups() -> dict[str, dict]:
    return {g["groupName"]: g for g in find(rendered("7b"), "RayCluster")["spec"]["workerGroupSpecs"]}


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_ray_accepts_the_launcher_config(cloud: str) -> None:
    validate_config(fillout_defaults(launcher(cloud)))
    broken = launcher(cloud)
    broken["available_node_types"]["oracle"]["min_worker"] = 1
    with pytest.raises(ValidationError):
        validate_config(fillout_defaults(broken))


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_node_types_match_the_kuberay_worker_groups(cloud: str) -> None:
    config = launcher(cloud)
    node_types = config["available_node_types"]
    groups = kuberay_groups()
    assert set(node_types) == {config["head_node_type"], *groups}
    assert node_types[config["head_node_type"]]["resources"] == {"CPU": 0}
    for name, group in groups.items():
        node_type = node_types[name]
        custom = {key: value for key, value in node_type["resources"].items() if key not in ("CPU", "GPU")}
        assert custom == {key: float(value) for key, value in group["resources"].items()}, name
        gpus = float(group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        assert node_type["resources"]["GPU"] == gpus, name
        assert (node_type["min_workers"], node_type["max_workers"]) == (group["minReplicas"], group["maxReplicas"])
    assert config["max_workers"] >= sum(node_type.get("max_workers", 0) for node_type in node_types.values())


@pytest.mark.parametrize("cloud", LAUNCHERS)
def test_launcher_security_and_image(cloud: str) -> None:
    config = launcher(cloud)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "RAY_AUTH_MODE=disabled" not in LAUNCHERS[cloud].read_text()
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert 'ACTIVEALIGN_API_TOKEN="$(cat ~/.activealign/api_token)"' in head_start
    image = find(rendered("7b"), "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert config["docker"]["image"].endswith("/" + image)


def test_clouds_offer_the_same_node_types() -> None:
    def shape(config: dict) -> dict:
        node_types = config["available_node_types"]
        return {name: (t["resources"], t.get("min_workers"), t.get("max_workers")) for name, t in node_types.items()}

    assert shape(launcher("aws")) == shape(launcher("gcp"))
