"""The PostgreSQL test server: fails loudly, naming the package to install, where Debian's binaries are missing,
and never outlives the process that started it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.postgres import INSTALL_HINT, postgres_bin_dir

SERVE_AND_HANG = """
import sys, time
from tests.postgres import postgres_server
with postgres_server(int(sys.argv[1])) as server:
    print(server.process.pid, server.log.parent, flush=True)
    time.sleep(600)
"""


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_missing_server_binaries_fail_with_the_install_command(tmp_path: Path) -> None:
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "initdb").touch()  # a client-only install: no server binary beside initdb
    with pytest.raises(pytest.fail.Exception, match=f"{tmp_path}/\\*/bin: {INSTALL_HINT}"):
        postgres_bin_dir(tmp_path)


def test_newest_major_version_is_chosen(tmp_path: Path) -> None:
    for major in ("9", "15", "13"):
        for name in ("initdb", "postgres"):
            (tmp_path / major / "bin").mkdir(parents=True, exist_ok=True)
            (tmp_path / major / "bin" / name).touch()
    assert postgres_bin_dir(tmp_path) == tmp_path / "15" / "bin"


def test_server_dies_with_a_killed_test_process() -> None:
    starter = subprocess.Popen([sys.executable, "-c", SERVE_AND_HANG, str(free_port())], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    pid, workdir = starter.stdout.readline().split()  # type: ignore[union-attr]
    try:
        assert running(int(pid))
        os.kill(starter.pid, signal.SIGKILL)  # no fixture teardown runs
        starter.wait()
        deadline = time.monotonic() + 30
        while running(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(int(pid))
    finally:
        starter.kill()
        shutil.rmtree(workdir, ignore_errors=True)
