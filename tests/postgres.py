"""A throwaway PostgreSQL server for the label-store tests: Debian's binaries, one server per test session.

The server runs from a temporary data directory as an unprivileged user (``postgres`` when the tests run
as root: PostgreSQL refuses to run as root), listens on 127.0.0.1 at a free port with ``trust``
authentication and durability switched off (fsync, synchronous commit), and dies with the process
that started it (``setpriv --pdeathsig``), so a killed test run leaves no server behind.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

INSTALL_HINT = "apt-get install postgresql"
SERVER_USER = "postgres"


def postgres_bin_dir(root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding ``initdb`` and ``postgres``; fails the test without."""
    found = sorted(
        (path.parent for path in root.glob("*/bin/initdb") if (path.parent / "postgres").is_file()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else -1,
    )
    if not found:
        pytest.fail(f"PostgreSQL server binaries not found under {root}/*/bin: {INSTALL_HINT}", pytrace=False)
    return found[-1]


class PostgresServer:
    """A running server; :meth:`create_database` hands out empty databases as SQLAlchemy URLs."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log
        self._names = itertools.count()

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database (``test_<n>``); returns its ``postgresql+psycopg://`` URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url("postgres", driver="postgresql"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_server_user(command: list[str | Path]) -> list[str]:
    """``command`` run as :data:`SERVER_USER` when we are root, killed (SIGINT: fast shutdown) when we die."""
    switch = ["--reuid", SERVER_USER, "--regid", SERVER_USER, "--clear-groups"] if os.geteuid() == 0 else []
    return ["setpriv", *switch, "--pdeathsig", "INT", "--", *map(str, command)]


def _wait_ready(server: PostgresServer, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(server.url("postgres", driver="postgresql"), connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            if server.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start ({exc}); log {server.log}:\n{server.log.read_text()}",
                            pytrace=False)
            time.sleep(0.1)


@contextmanager
def postgres_server(port: int) -> Iterator[PostgresServer]:
    """Initialise a cluster in a temporary directory, run it on 127.0.0.1:``port``, stop and delete it after."""
    bin_dir = postgres_bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="activealign-postgres-"))
    data, log = workdir / "data", workdir / "server.log"
    if os.geteuid() == 0:
        server_user = pwd.getpwnam(SERVER_USER)
        os.chown(workdir, server_user.pw_uid, server_user.pw_gid)
    process = None
    try:
        try:
            subprocess.run(
                _as_server_user([bin_dir / "initdb", "-D", data, "-U", SERVER_USER, "--auth=trust",
                                 "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]),
                check=True, capture_output=True,
            )
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"initdb failed: {exc.stderr.decode(errors='replace')}", pytrace=False)
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                _as_server_user([bin_dir / "postgres", "-D", data, "-p", str(port), "-k", workdir,
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                 "-c", "max_connections=300"]),
                stdout=log_file, stderr=subprocess.STDOUT,
            )
        server = PostgresServer(process, port, log)
        _wait_ready(server)
        yield server
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, stop cleanly
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
