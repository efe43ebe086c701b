"""A real multi-node Ray cluster on one machine: one head and worker nodes started with ``ray start --block``.

Every node is its own ``ray start --block`` process in its own session (process group) with its own ports, and
worker nodes advertise custom resources standing in for GPU node types. Teardown interrupts exactly those process
groups (never ``ray stop``, which would kill every Ray process on the machine) and then checks that no process
whose command line names this cluster's temp dir is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ray.util.state import list_nodes

from tests.conftest import free_port

RAY_BIN = Path(sys.executable).with_name("ray")


class NodeExited(RuntimeError):
    """A ``ray start --block`` process ended (startup failure or crash)."""


@dataclass
class RayNode:
    """One ``ray start --block`` process and what it was asked to advertise."""

    name: str
    resources: dict[str, float]
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class LocalRayCluster:
    """Head + worker nodes on 127.0.0.1; ``dashboard_url`` takes ``ray job submit`` requests."""

    temp_dir: Path
    env: dict[str, str]
    num_cpus_per_node: int = 2
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start_node(self, name: str, resources: dict[str, float], head_args: list[str]) -> None:
        ports = {
            "--node-manager-port": free_port(), "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
        }
        worker_base = 20000 + 1000 * len(self.nodes) + free_port() % 20000
        args = [
            str(RAY_BIN), "start", "--block", "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}", f"--num-cpus={self.num_cpus_per_node}", "--num-gpus=0",
            f"--resources={json.dumps(resources)}", "--object-store-memory=200000000",
            f"--min-worker-port={worker_base}", f"--max-worker-port={worker_base + 199}",
            *(f"{flag}={port}" for flag, port in ports.items()), *head_args,
        ]
        log_path = self.temp_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.nodes.append(RayNode(name, resources, process, log_path))

    def start(self, workers: dict[str, dict[str, float]], timeout_s: float = 180.0, attempts: int = 8) -> None:
        """Start the head (no custom resources), then one worker node per entry of ``workers``, one at a time.

        A node whose raylet misses Ray's fixed 30 s registration window on a loaded machine exits; it is
        started again (fresh ports) up to ``attempts`` times.
        """
        self._start_with_retries("head", {}, self._head_args, 1, timeout_s, attempts)
        for index, (name, resources) in enumerate(workers.items(), start=2):
            self._start_with_retries(
                name, resources, lambda: [f"--address={self.gcs_address}"], index, timeout_s, attempts
            )

    def _head_args(self) -> list[str]:
        """Head flags, on fresh GCS and dashboard ports (a failed attempt may still hold the old ones)."""
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        return [
            "--head", f"--port={self.gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
        ]

    def _start_with_retries(
        self, name: str, resources: dict[str, float], node_args: Callable[[], list[str]], expected_alive: int,
        timeout_s: float, attempts: int,
    ) -> None:
        for attempt in range(1, attempts + 1):
            self._start_node(name, resources, node_args())
            try:
                self._wait_for(lambda: self.alive_nodes() >= expected_alive, timeout_s, name)
                return
            except NodeExited:
                failed = self.nodes.pop()
                with contextlib.suppress(ProcessLookupError):  # what the failed start left in its group
                    os.killpg(failed.process.pid, signal.SIGKILL)
                if attempt == attempts:
                    raise
                failed.log_path.rename(failed.log_path.with_suffix(f".attempt{attempt}.log"))

    def alive_nodes(self) -> int:
        """Alive nodes as the head reports them (the state API behind ``ray list nodes``)."""
        for node in self.nodes:
            if node.process.poll() is not None:
                raise NodeExited(f"ray node {node.name} exited: {node.log_path.read_text()[-2000:]}")
        try:
            return sum(node.state == "ALIVE" for node in list_nodes(address=self.dashboard_url, timeout=10))
        except Exception:  # noqa: BLE001 - the dashboard is not answering yet
            return 0

    def _wait_for(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not up after {timeout_s:.0f} s (logs in {self.temp_dir})")
            time.sleep(1.0)

    def leftover_pids(self) -> list[int]:
        """Processes whose command line names this cluster's temp dir or GCS address (ours, by construction)."""
        markers = (str(self.temp_dir).encode(), self.gcs_address.encode())
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(marker in cmdline for marker in markers):
                    found.append(int(entry.name))
        return found

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        """Stop workers, then the head, by interrupting their process groups; returns leaked pids (then killed).

        ``ray start --block`` shuts its node down cleanly on SIGINT (it ignores SIGTERM for a long while), so
        each group gets SIGINT first and SIGKILL only if it is still there after ``timeout_s``.
        """
        for node in reversed(self.nodes):
            for sig in (signal.SIGINT, signal.SIGKILL):
                if node.process.poll() is not None:
                    break
                os.killpg(node.process.pid, sig)
                try:
                    node.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    continue
        deadline = time.monotonic() + timeout_s
        while (leaked := self.leftover_pids()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leaked


def new_temp_dir() -> Path:
    """A short temp dir (Ray's socket paths must stay under ~107 characters)."""
    return Path(tempfile.mkdtemp(prefix="aa-ray-", dir="/tmp"))
