"""`activealign serve` as a child process in its own session: start it until healthy, stop or kill all of it.

Shared by the load benchmarks, the annotation screenshots and the oracle crash and clean-stop drills. The server runs
in a new session (``start_new_session``), so every process it starts (its Ray node, the Serve controller, proxy and
replicas) carries its session id and can be found and signalled after the CLI itself is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_server(config_path: Path, log: Path, token: str) -> subprocess.Popen:
    env = {**os.environ, "ACTIVEALIGN_API_TOKEN": token, "PYTHONPATH": str(REPO_ROOT)}
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


def start_healthy(config_path: Path, log: Path, url: str, token: str, attempts: int = 3,
                  timeout: float = 240) -> subprocess.Popen:
    """Start the server, again if Ray's node start-up times out (it gives up after 30 s on an overloaded box);
    each start may take ``timeout`` seconds, after which all of it is killed and a TimeoutError (with the log's
    tail) raised; an interrupt while waiting kills it too."""
    for _ in range(attempts):
        server = start_server(config_path, log, token)
        try:
            healthy = wait_healthy(url, server, timeout)
        except TimeoutError as exc:
            kill_session(server)
            raise TimeoutError(f"{exc}:\n{log.read_text()[-3000:]}") from None
        except BaseException:  # interrupted while waiting: leave nothing running
            kill_session(server)
            raise
        if healthy:
            return server
        kill_session(server)  # whatever the failed start left behind
    raise AssertionError(f"oracle service did not start:\n{log.read_text()[-3000:]}")


def port_is_free(port: int) -> bool:
    """Nothing accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def session_pids(session: int) -> list[int]:
    """Pids of the live processes whose session id is ``session`` (zombies, already dead, are left out)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError, FileNotFoundError):
                state = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z" and os.getsid(int(name)) == session:
                    pids.append(int(name))
    return pids


def kill_session(server: subprocess.Popen) -> None:
    """SIGKILL every process of the server's session (the CLI, its Ray node and the Serve replicas)."""
    for pid in session_pids(server.pid):  # started with start_new_session=True: its pid is the session id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    server.wait(timeout=30)


def stop_server(server: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM and wait up to ``grace_s``; then SIGKILL whatever of its session is left."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=grace_s)
    kill_session(server)


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(oracle: dict[str, Any], workdir: Path, token: str, timeout: float = 240) -> Iterator[str]:
    """`activealign serve` with the ``oracle`` settings (their ``port`` on 127.0.0.1) and 4 logical CPUs, its config
    and log in ``workdir``, until healthy (:func:`start_healthy`); yields its URL and stops all of it on exit."""
    config_path = workdir / "serve.yaml"
    config_path.write_text(yaml.safe_dump({"oracle": oracle, "cluster": {"num_cpus": 4}}))
    server = start_healthy(config_path, workdir / "serve.log", f"http://127.0.0.1:{oracle['port']}", token,
                           timeout=timeout)
    try:
        yield f"http://127.0.0.1:{oracle['port']}"
    finally:
        stop_server(server)
