"""``ray job submit --working-dir . -- activealign run …`` against a real ``ray start --head`` cluster.

The head runs in its own temp dir and process group (tests/infra/local_cluster.py) and is stopped by
interrupting exactly that group, never with ``ray stop``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.infra.local_cluster import RAY_BIN, LocalRayCluster, new_temp_dir

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submit(dashboard_url: str, entrypoint: list[str], env: dict[str, str], attempts: int = 20) -> str:
    """``ray job submit --no-wait``; retries the 500 "No available agent" answered right after start-up."""
    command = [str(RAY_BIN), "job", "submit", "--address", dashboard_url, "--working-dir", str(REPO_ROOT),
               "--no-wait", "--", *entrypoint]
    for _ in range(attempts):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        if result.returncode == 0:
            return next(line.split("'")[1] for line in result.stdout.splitlines() if "submitted successfully" in line)
        if "No available agent" not in result.stdout + result.stderr:
            raise AssertionError(result.stdout + result.stderr)
        time.sleep(3)
    raise AssertionError("job agent never became available")


@pytest.mark.slow
def test_ray_job_submit_runs_the_loop(tmp_path: Path) -> None:
    from ray.job_submission import JobSubmissionClient

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cluster = LocalRayCluster(temp_dir=new_temp_dir(), env=env, num_cpus_per_node=8)
    try:
        cluster.start(workers={})
        overrides = {
            "loop.run_dir": tmp_path / "run", "loop.rounds": 1, "loop.prompts_per_round": 4,
            "loop.num_eval_prompts": 4, "generation.max_new_tokens": 8, "selection.budget": 4, "train.epochs": 1,
            "oracle.port": free_port(), "oracle.label_store_url": f"sqlite:///{tmp_path}/labels.db",
            "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db", "model.path": tmp_path / "model",
        }
        entrypoint = [sys.executable, "-m", "jobs.cli", "run", "--config", "configs/tiny.yaml",
                      *(arg for key, value in overrides.items() for arg in (f"--{key}", str(value)))]
        job_id = submit(cluster.dashboard_url, entrypoint, env)
        client = JobSubmissionClient(cluster.dashboard_url)
        deadline = time.monotonic() + 1200
        while (status := str(client.get_job_status(job_id).value)) not in TERMINAL and time.monotonic() < deadline:
            time.sleep(5)
        logs = client.get_job_logs(job_id)
        assert status == "SUCCEEDED", logs[-4000:]
        assert "round 1/1" in logs and f"report: {tmp_path / 'run'}" in logs
        assert (tmp_path / "run" / "round_001" / "metrics.json").exists()
    finally:
        assert cluster.stop() == []
