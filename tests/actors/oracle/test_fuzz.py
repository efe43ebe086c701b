"""The oracle endpoint fuzzed from its own OpenAPI document (schemathesis, every check): no 5xx, every answer
matches the published schema (status, content type, body), auth is enforced, and every 422 names its field."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from system.config import Config
from tests.actors.oracle.conftest import TOKEN, deploy, oracle_config
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    store = tmp_path_factory.mktemp("fuzz") / "labels.db"
    return oracle_config(store, kind="programmatic", callable="tests.system.oracles.rewards_for_tests:politeness")


@pytest.fixture(scope="module")
def url(ray_cluster, token_env: str, config: Config) -> Iterator[str]:
    yield from deploy(config)


def test_endpoint_conforms_to_its_published_schema(url: str, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
               "--checks", "all", "--max-examples", "25", "--seed", "1", "--generation-database", "none",
               "--request-timeout", "120", "--max-response-time", "120",  # a 4096-item reward on a loaded box
               "--header", f"Authorization: Bearer {TOKEN}", "--report-dir", str(tmp_path)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.actors.oracle.fuzz_hooks", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / "out.txt").write_text(done.stdout)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
