"""A real ``mlflow server`` for tests: sqlite backend store, artifacts proxied to a local folder, loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port


@contextmanager
def running_mlflow_server(root: Path, timeout_s: float = 240.0) -> Iterator[tuple[str, Path]]:
    """Yield ``(url, artifacts_dir)`` of a server on a free 127.0.0.1 port; its process group is stopped after.

    A fresh sqlite store runs every MLflow schema migration first: allow minutes on a loaded machine.
    """
    port = free_port()
    artifacts = root / "artifacts"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log_path = root / "mlflow-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts",
             "--artifacts-destination", str(artifacts)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server did not answer /health in {timeout_s:.0f} s ({log_path})")
            time.sleep(0.5)
        yield url, artifacts
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
