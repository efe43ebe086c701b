"""Helpers for the oracle-service tests: a config on a free loopback port, its label store, one Ray cluster."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from system.config import Config, config_from_dict
from tests.conftest import REPO_ROOT, free_port

TOKEN = "test-token-0123456789"
PORT = free_port()  # one Serve HTTP proxy serves every module's app in turn (Serve keeps its first http_options)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def oracle_config(store: Path | str, **oracle: Any) -> Config:
    """Oracle settings for the tests; ``store`` is a SQLite file or a label-store URL."""
    store_url = store if isinstance(store, str) else f"sqlite:///{store}"
    settings = {"label_store_url": store_url, "port": PORT, "host": "127.0.0.1",
                "max_batch_size": 16, "batch_wait_timeout_s": 0.05, **oracle}
    return config_from_dict({"oracle": settings, "cluster": {"oracle": {"num_cpus": 0.5}}})


def add_people(config: Config, people: Sequence[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """People (name, role) added to the config's label store as ``activealign annotators add`` does:
    ``{name: Authorization header}``."""
    from system.labels import LabelStore
    from system.labels.annotators import AnnotatorRegistry

    with LabelStore(config.oracle.label_store_url) as store:
        registry = AnnotatorRegistry(store)
        tokens = {name: registry.add(name, role)[1] for name, role in people}
    return {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}


def deploy(config: Config) -> Iterator[str]:
    """Deploy the oracle app on the package's Ray cluster, yield its base URL, delete the app afterwards."""
    from actors.oracle import start_oracle_service, stop_oracle_service

    url = start_oracle_service(config)
    assert httpx.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
    yield url
    stop_oracle_service(shutdown=False)


@pytest.fixture(scope="package")
def token_env() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTIVEALIGN_API_TOKEN", TOKEN)
        yield TOKEN


@pytest.fixture(scope="package")
def ray_cluster():
    """One local Ray for every oracle-service module (each deploys and deletes its own app on it)."""
    import ray

    context = ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                       runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    yield context
    ray.shutdown()
