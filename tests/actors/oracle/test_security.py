"""Token rules: a token is required off loopback; on loopback a missing token is generated once."""

from __future__ import annotations

import os

import pytest

from actors.oracle.security import is_loopback, resolve_token
from system.config import OracleConfig, load_config
from system.errors import OracleError
from tests.conftest import REPO_ROOT


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
    config = load_config(REPO_ROOT / "configs/tiny.yaml", ["oracle.host=0.0.0.0"])
    with pytest.raises(OracleError, match=r"not loopback and \$ACTIVEALIGN_API_TOKEN is empty") as refused:
        main(config)  # refused before any Ray or Serve start
    assert refused.value.exit_code == 3
