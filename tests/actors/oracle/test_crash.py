"""SIGKILL the serve process mid-stream: a retrying client's acknowledged labels all survive, exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from system.oracle_client import OracleClient
from system.types import CandidatePair
from tests.actors.oracle.conftest import TOKEN
from tests.conftest import REPO_ROOT, free_port

N_PAIRS = 40
KILL_AFTER = 12


def start_server(config_path: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ACTIVEALIGN_API_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "serve", "--config", str(config_path)], cwd=REPO_ROOT, env=env,
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 240) -> bool:
    """True once ``/healthz`` answers; False if the server process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def start_healthy(config_path: Path, log: Path, url: str, attempts: int = 3) -> subprocess.Popen:
    """Start the server, again if Ray's node start-up times out (it gives up after 30 s on an overloaded box)."""
    for _ in range(attempts):
        server = start_server(config_path, log)
        if wait_healthy(url, server):
            return server
        kill_session(server)  # whatever the failed start left behind
    raise AssertionError(f"oracle service did not start:\n{log.read_text()[-3000:]}")


def kill_session(server: subprocess.Popen) -> None:
    """SIGKILL every process of the server's session (the CLI, its Ray node and the Serve replicas)."""
    session = server.pid  # started with start_new_session=True: its pid is the session id
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getsid(int(name)) == session:
                os.kill(int(name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    server.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "labels.db"
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump({
        "oracle": {"kind": "programmatic", "callable": "tests.system.oracles.rewards_for_tests:politeness",
                   "port": port, "label_store_url": f"sqlite:///{store}"},
        "cluster": {"num_cpus": 4},
    }))
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    pairs = [CandidatePair(pair_id=f"k{i}", prompt_id="q", prompt="q", response_1="please" * (i % 2 + 1),
                           response_2="thanks") for i in range(N_PAIRS)]
    acknowledged: list[str] = []
    failures: list[BaseException] = []

    def stream() -> None:
        with OracleClient(url, token=TOKEN, timeout=10, retry_deadline_s=900, progress=False) as client:
            for pair in pairs:
                try:
                    (label,) = client.label([pair], round=1)
                except BaseException as exc:  # surfaced in the main thread
                    failures.append(exc)
                    return
                acknowledged.append(label.pair_id)

    server = start_healthy(config_path, log, url)
    try:
        client_thread = threading.Thread(target=stream)
        client_thread.start()
        while len(acknowledged) < KILL_AFTER and client_thread.is_alive():
            time.sleep(0.05)
        kill_session(server)
        acked_before_kill = list(acknowledged)
        assert len(acked_before_kill) < N_PAIRS, "the stream finished before the kill"
        server = start_healthy(config_path, log, url)
        client_thread.join(timeout=400)
        assert not client_thread.is_alive() and not failures, (failures, log.read_text()[-3000:])
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=60)
            kill_session(server)
    rows = sqlite3.connect(store).execute("select pair_id, count(*) from labels group by pair_id").fetchall()
    counts = dict(rows)
    assert set(acked_before_kill) <= set(counts)
    assert sorted(acknowledged) == sorted(counts) == sorted(pair.pair_id for pair in pairs)
    assert set(counts.values()) == {1}
