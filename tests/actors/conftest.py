"""A local Ray cluster per test module (8 logical CPUs on a 2-core box; no dashboard)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    context = ray.init(
        num_cpus=8,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
        log_to_driver=False,
    )
    yield context
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny model of configs/tiny.yaml, built once per session and shared by every actor test."""
    from system.config import load_config
    from system.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", load_config("configs/tiny.yaml").model.tiny)
