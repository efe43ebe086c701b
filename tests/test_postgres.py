"""The PostgreSQL test server fails loudly, naming the package to install, where Debian's binaries are missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres import INSTALL_HINT, postgres_bin_dir


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
