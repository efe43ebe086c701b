"""Token rules: a token is required off loopback; on loopback a missing token is generated once; a short
token is refused; the token never shows in an error message or a log line."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from actors.oracle.security import is_loopback, require_admin, resolve_token
from system.config import OracleConfig, load_config
from system.errors import ConfigError, OracleError
from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry
from system.oracle_client import OracleClient
from tests.conftest import REPO_ROOT, free_port


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("example.org", False), ("::", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_loopback_without_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_TOKEN", raising=False)
    with pytest.raises(OracleError, match=r"oracle.host '0.0.0.0' is not loopback and \$MY_TOKEN is empty"):
        resolve_token(OracleConfig(host="0.0.0.0", token_env="MY_TOKEN"))


def test_loopback_without_token_generates_one_into_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_TOKEN", raising=False)
    token, generated = resolve_token(OracleConfig(token_env="MY_TOKEN"))
    assert generated and len(token) >= 32 and os.environ["MY_TOKEN"] == token
    assert resolve_token(OracleConfig(token_env="MY_TOKEN")) == (token, False)
    with pytest.raises(OracleError, match=r"\$OTHER is empty"):
        monkeypatch.delenv("OTHER", raising=False)
        resolve_token(OracleConfig(token_env="OTHER"), allow_generate=False)


def test_serve_job_refuses_a_public_host_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.serve import main

    monkeypatch.delenv("ACTIVEALIGN_API_TOKEN", raising=False)
    config = load_config(REPO_ROOT / "configs/tiny.yaml", ["oracle.host=0.0.0.0", f"oracle.port={free_port()}"])
    with pytest.raises(OracleError, match=r"not loopback and \$ACTIVEALIGN_API_TOKEN is empty") as refused:
        main(config)  # refused before any Ray or Serve start
    assert refused.value.exit_code == 3


@pytest.mark.parametrize("allow_generate", [True, False])
def test_a_token_under_16_characters_is_refused_naming_the_variable_only(
    monkeypatch: pytest.MonkeyPatch, allow_generate: bool
) -> None:
    monkeypatch.setenv("MY_TOKEN", "y" * 15)
    with pytest.raises(ConfigError, match=r"^\$MY_TOKEN is shorter than 16 characters") as refused:
        resolve_token(OracleConfig(token_env="MY_TOKEN"), allow_generate=allow_generate)
    assert "y" * 15 not in str(refused.value) and "\n" not in str(refused.value)
    assert refused.value.exit_code == 2
    monkeypatch.setenv("MY_TOKEN", "y" * 16)
    assert resolve_token(OracleConfig(token_env="MY_TOKEN")) == ("y" * 16, False)


def test_serve_command_exits_2_on_a_short_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from jobs.cli import main

    monkeypatch.setenv("ACTIVEALIGN_API_TOKEN", "short-token")
    monkeypatch.setattr(sys, "argv", ["activealign", "serve", "--config", str(REPO_ROOT / "configs/tiny.yaml"),
                                      "--oracle.port", str(free_port())])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: $ACTIVEALIGN_API_TOKEN is shorter than 16 characters: set a longer bearer token, e.g. "
                   "python -c 'import secrets; print(secrets.token_urlsafe(24))'"]


def _guarded_app(token: str, store_dir: Path) -> FastAPI:
    """One route behind the service's own run-token dependency, with a real (empty) annotator registry."""
    app = FastAPI()
    app.state.settings = SimpleNamespace(token=token)
    app.state.annotators = AnnotatorRegistry(LabelStore(f"sqlite:///{store_dir / 'labels.db'}"))

    @app.get("/v1/labels", dependencies=[Depends(require_admin)])
    def labels() -> dict[str, list]:
        return {"labels": []}

    return app


def test_wrong_tokens_of_equal_and_other_lengths_are_refused_by_constant_time_comparison(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    token = secrets.token_urlsafe(24)
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real_compare(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    http = TestClient(_guarded_app(token, tmp_path))
    equal_length = token[:-1] + ("A" if token[-1] != "A" else "B")
    for wrong in [equal_length, token[:-1], token + "x", "x" * 64]:
        assert len(wrong) != len(token) or wrong != token
        response = http.get("/v1/labels", headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 401, wrong
        assert token not in response.text and wrong not in response.text
    assert http.get("/v1/labels", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert [given.decode() for given, _ in compared] == [equal_length, token[:-1], token + "x", "x" * 64, token]
    assert {expected for _, expected in compared} == {token.encode()}


def test_client_errors_and_logs_never_show_the_token(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    server_token, client_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    client = OracleClient("http://testserver", token=client_token, retry_deadline_s=0.3, progress=False)
    client.http = TestClient(_guarded_app(server_token, tmp_path), headers=dict(client.http.headers))
    with pytest.raises(OracleError, match="HTTP 401") as refused:
        client.request("GET", "/v1/labels")
    unreachable = OracleClient("http://127.0.0.1:9", token=client_token, retry_deadline_s=0.3, progress=False)
    with pytest.raises(OracleError, match="unavailable after retries") as down:
        unreachable.request("GET", "/v1/labels")
    for text in [str(refused.value), repr(refused.value), str(down.value), caplog.text]:
        assert client_token not in text and server_token not in text
    assert "HTTP Request: GET http://testserver/v1/labels" in caplog.text  # the request itself was logged


@contextlib.contextmanager
def _serve_job_without_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """``jobs.serve.main`` with Ray and Serve replaced by no-ops; ``serve.run`` sends the job its own SIGTERM
    (the Ctrl-C of a terminal) so ``main`` returns; yields the applications handed to ``serve.run``."""
    from ray import serve

    import actors.oracle
    import jobs.ray_session

    deployed: list[Any] = []

    def run(app: Any, **_: Any) -> None:
        deployed.append(app)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(jobs.ray_session, "ray_session", lambda config: contextlib.nullcontext())
    monkeypatch.setattr(jobs.ray_session, "check_oracle_port", lambda config: None)
    monkeypatch.setattr(serve, "start", lambda **_: None)
    monkeypatch.setattr(serve, "run", run)
    monkeypatch.setattr(actors.oracle, "stop_oracle_service", lambda: None)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield deployed
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_service_start_logs_and_prints_no_configured_token(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    from jobs.serve import main

    caplog.set_level(logging.DEBUG)
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv("ACTIVEALIGN_API_TOKEN", token)
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"oracle.label_store_url=sqlite:///{tmp_path}/labels.db"])
    with _serve_job_without_ray(monkeypatch) as deployed:
        assert main(config) == 0
    assert len(deployed) == 1
    out = capsys.readouterr()
    assert "oracle (reward_model) serving at http://127.0.0.1:" in out.out
    assert "oracle service (reward_model) at http://127.0.0.1:" in caplog.text
    assert token not in out.out + out.err + caplog.text


def test_a_generated_token_is_printed_once_to_the_terminal_and_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    from jobs.serve import main

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ACTIVEALIGN_API_TOKEN", "")  # unset for the job; the generated token is removed afterwards
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"oracle.label_store_url=sqlite:///{tmp_path}/labels.db"])
    with _serve_job_without_ray(monkeypatch):
        assert main(config) == 0
    token = os.environ["ACTIVEALIGN_API_TOKEN"]
    out = capsys.readouterr()
    assert len(token) >= 32 and out.err.count(token) == 1 and token not in out.out
    assert "generated a token for this run" in caplog.text and token not in caplog.text
