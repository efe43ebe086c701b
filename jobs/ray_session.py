"""The Ray a command runs on: connect to a cluster or start one in-process, stop it the way it was started.

Every job (``run``, ``serve``, ``train``, ``generate``) enters :func:`ray_session`; the oracle port is
checked before a local Ray starts, and SIGTERM stops a command the way Ctrl-C does.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from system.config import Config
from system.ports import ensure_port_free

logger = logging.getLogger(__name__)


def check_oracle_port(config: Config) -> None:
    """On a Ray this command starts itself, stop before starting it when ``oracle.port`` is taken
    (a cluster's port lives on its head node, where Serve reports a conflict itself)."""
    if config.cluster.ray_address() is None:
        ensure_port_free(config.oracle.host, config.oracle.port, "oracle.port")


@contextmanager
def ray_session(config: Config) -> Iterator[str | None]:
    """Connect to ``cluster.address`` (or ``$RAY_ADDRESS`` under ``ray job submit``), else start a local
    Ray in-process; yields the dashboard URL (None without one). Only a Ray started here is shut down."""
    address = config.cluster.ray_address()
    if ray.is_initialized():
        yield None
        return
    if address:
        context = ray.init(address=address, runtime_env=config.cluster.runtime_env or None)
    else:
        context = start_local_ray(config)
    stop_on_sigterm()
    try:
        url = context.dashboard_url
        yield f"http://{url}" if url else None
    finally:
        ray.shutdown()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """SIGTERM stops a command the way Ctrl-C does: every ``finally`` runs (actors, Serve and the Ray this command
    started are shut down) and the CLI exits 130. Replaces Ray's driver handler, a bare ``sys.exit``."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


SERVE_PROXY_PATIENCE = {
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
}
"""Serve's HTTP proxy gets 5–10 s to answer health checks by default; on a loaded 2-core laptop it can miss
them and be killed while the loop starts. The in-process cluster inherits these longer limits."""


def start_local_ray(config: Config, attempts: int = 3) -> Any:
    """``ray.init`` of an in-process cluster, retried: on an overloaded machine the raylet can miss Ray's
    fixed 30 s registration window, and a second try usually makes it."""
    for name, seconds in SERVE_PROXY_PATIENCE.items():
        os.environ.setdefault(name, seconds)
    for attempt in range(1, attempts + 1):
        try:
            return ray.init(
                num_cpus=config.cluster.num_cpus,
                include_dashboard=config.cluster.include_dashboard,
                dashboard_host=config.cluster.dashboard_host,
            )
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this time-out
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            logger.warning("local Ray did not start (attempt %d/%d): %s; retrying", attempt, attempts, exc)
            ray.shutdown()
    raise AssertionError("unreachable")
