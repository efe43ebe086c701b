"""A taken oracle port stops ``run`` and ``serve`` at once, with one line naming the port and its holder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from system.errors import ConfigError
from system.ports import ensure_port_free
from tests.conftest import REPO_ROOT, free_port


@pytest.fixture
def held_port() -> tuple[int, int]:
    """A port this test process listens on, and the holder's pid (this process)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen()
    yield sock.getsockname()[1], os.getpid()
    sock.close()


def test_free_port_passes_and_taken_one_names_port_and_holder(held_port: tuple[int, int]) -> None:
    ensure_port_free("127.0.0.1", free_port(), "oracle.port")
    port, pid = held_port
    with pytest.raises(ConfigError) as caught:
        ensure_port_free("127.0.0.1", port, "oracle.port")
    message = str(caught.value)
    assert f"oracle.port: port {port} on 127.0.0.1 is already in use by pid {pid} (" in message
    assert "--oracle.port N" in message and "\n" not in message


@pytest.mark.parametrize("verb", ["run", "serve"])
def test_cli_stops_before_starting_ray(verb: str, held_port: tuple[int, int], tmp_path) -> None:
    port, pid = held_port
    env = {**os.environ, "RAY_ADDRESS": ""}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", verb, "--config", "configs/tiny.yaml", "--oracle.port", str(port),
         "--loop.run_dir", str(tmp_path / "run")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 60
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: oracle.port: port {port} on 127.0.0.1 is already in use by pid {pid}")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
