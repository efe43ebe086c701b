"""MLflow for clusters: the compose file and Kubernetes manifest agree and hold no credentials, and the
``http://`` tracking path works against a real ``mlflow server`` (sqlite backend, proxied artifacts; slow:
a fresh store runs every MLflow schema migration)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml
from mlflow import MlflowClient

from system.config import Config, TrackingConfig
from system.tracking import Tracker
from tests.conftest import REPO_ROOT
from tests.infra.manifests import find, rendered
from tests.infra.mlflow_server import running_mlflow_server

MLFLOW_DIR = REPO_ROOT / "infra" / "mlflow"
COMPOSE = MLFLOW_DIR / "docker-compose.yaml"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
SECRET_NAME = re.compile(r"(^|_)(TOKEN|PASSWORD|SECRET|ACCESS_KEY|API_KEY|CREDENTIALS?)(_|$)")
REQUIRED_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):\?[^}]*\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def option_value(args: list[str], option: str) -> str:
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(option + "=")]
    assert len(values) == 1, (option, args)
    return values[0]


def test_compose_file_follows_the_compose_spec() -> None:
    jsonschema.validate(compose(), json.loads(COMPOSE_SCHEMA.read_text()))
    broken = compose()
    broken["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(COMPOSE_SCHEMA.read_text()))


def test_compose_credentials_only_from_the_env_file() -> None:
    services = compose()["services"]
    example = dict(
        line.split("=", 1) for line in (MLFLOW_DIR / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    referenced: set[str] = set()
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key) or key.endswith("_USER"):
                assert REQUIRED_VARIABLE.fullmatch(str(value)), f"{name}.{key} must come from the env file"
        text = yaml.safe_dump(service)
        referenced |= {match["name"] for match in REQUIRED_VARIABLE.finditer(text)}
        referenced |= set(re.findall(r"\$\{([A-Z0-9_]+):-", text))
        for port in service.get("ports", []):
            assert port.startswith("${MLFLOW_BIND_ADDRESS:-127.0.0.1}:"), port
    assert referenced == set(example)
    assert all(example[name] == "" for name in example if SECRET_NAME.search(name))
    assert "infra/mlflow/.env" in (REPO_ROOT / ".gitignore").read_text().split()
    assert "infra/mlflow/.env" in (REPO_ROOT / ".dockerignore").read_text().split()


def test_compose_and_kubernetes_run_the_same_server() -> None:
    services = compose()["services"]
    compose_args = services["mlflow"]["command"]
    k8s_server = find(rendered("7b"), "Deployment", "mlflow")["spec"]["template"]["spec"]
    k8s_args = k8s_server["containers"][0]["args"]
    destination = option_value(compose_args, "--artifacts-destination")
    assert destination == option_value(k8s_args, "--artifacts-destination")
    bucket = destination.removeprefix("s3://").split("/")[0]
    assert services["make-bucket"]["command"][-1] == bucket
    assert k8s_server["initContainers"][0]["command"][-1] == bucket
    assert "--serve-artifacts" in compose_args and "--serve-artifacts" in k8s_args
    assert option_value(compose_args, "--backend-store-uri").startswith("postgresql+psycopg://")
    images = {service["image"] for service in services.values()}
    assert all(":" in image and not image.endswith(":latest") for image in images)
    assert "activealign:0.1.0-cpu" in images


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.mark.slow
def test_tracking_over_http_with_proxied_artifacts(mlflow_server: tuple[str, Path], tmp_path: Path) -> None:
    url, artifacts = mlflow_server
    tracking = TrackingConfig(uri=url, experiment="cluster-check", artifact_location="mlflow-artifacts:/cluster-check")
    tracker = Tracker.open(tracking, run_name="http-check")
    tracker.log_config(Config(tracking=tracking))
    for step, reward in enumerate([0.1, 0.4, 0.9]):
        tracker.log_metrics({"eval/reward": reward}, step=step)
    report = tmp_path / "report.txt"
    report.write_text("round 2: reward 0.9\n")
    tracker.log_artifact(report)
    tracker.finish()

    client = MlflowClient(tracking_uri=url)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(tracker.run_id, "eval/reward")] == [0.1, 0.4, 0.9]
    assert run.data.params["tracking.uri"] == url
    stored = list(artifacts.glob("cluster-check/**/report.txt"))
    assert len(stored) == 1 and stored[0].read_text() == report.read_text()
    downloaded = client.download_artifacts(tracker.run_id, "report.txt", str(tmp_path / "down"))
    assert Path(downloaded).read_text() == report.read_text()
