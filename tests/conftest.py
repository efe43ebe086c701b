"""Shared fixtures. Tests run offline on CPU; Ray tests start their own local cluster."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from tests.postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[1]
STORE_BACKENDS = ("sqlite", "postgresql")
"""Label-store backends the store, export and oracle-service tests run on (``store_url`` fixture params)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, started the first time a test asks for it."""
    from tests.postgres import postgres_server

    with postgres_server(free_port()) as server:
        yield server


def store_url_factory(request: pytest.FixtureRequest, directory: Path) -> Callable[[], str]:
    """Fresh empty label-store URLs on the backend named by ``request.param``: SQLite files in ``directory``
    or new databases on the session's PostgreSQL server."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database
    numbers = itertools.count()
    return lambda: f"sqlite:///{directory / f'labels-{next(numbers)}.db'}"


@pytest.fixture(params=STORE_BACKENDS)
def new_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Factory of empty label stores (one per call) on each backend in turn."""
    return store_url_factory(request, tmp_path)


@pytest.fixture
def store_url(new_store_url: Callable[[], str]) -> str:
    """An empty label store's URL, on each backend in turn."""
    return new_store_url()


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def module_store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty label store's URL shared by a whole test module, which runs once per backend."""
    return store_url_factory(request, tmp_path_factory.mktemp("labels"))()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        yield chromium
        chromium.close()
