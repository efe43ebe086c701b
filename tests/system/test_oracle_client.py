"""The oracle client's retry bounds come from ``oracle.retry_max_attempts`` and ``oracle.retry_deadline_s``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from system.config import OracleConfig
from system.errors import OracleError
from system.oracle_client import OracleClient


class _Overloaded(BaseHTTPRequestHandler):
    """Answers every request 503 (a restarting or overloaded service) and counts them."""

    hits = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet: the test counts the requests."""


@pytest.fixture
def overloaded_url() -> Iterator[str]:
    _Overloaded.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Overloaded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_requests_stop_after_the_configured_number_of_tries(overloaded_url: str) -> None:
    oracle = OracleConfig(retry_max_attempts=3, retry_deadline_s=600)
    client = OracleClient.from_config(oracle, base_url=overloaded_url, token="t", progress=False)
    with client, pytest.raises(OracleError, match=r"unavailable after retries \(RetryableStatus\('HTTP 503'") as down:
        client.healthz()
    assert _Overloaded.hits == 3 and down.value.exit_code == 3


def test_requests_stop_at_the_configured_deadline(overloaded_url: str) -> None:
    oracle = OracleConfig(retry_max_attempts=1000, retry_deadline_s=0.5)
    client = OracleClient.from_config(oracle, base_url=overloaded_url, token="t", progress=False)
    with client, pytest.raises(OracleError, match="unavailable after retries"):
        client.healthz()
    assert 2 <= _Overloaded.hits < 10  # backoff 0.2 s, 0.4 s, …: a handful of tries in half a second
