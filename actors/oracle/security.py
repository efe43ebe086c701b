"""Bearer-token auth, the request-size limit and the loopback rule for running without a configured token.

The token comes from the environment variable named by ``oracle.token_env`` and must have at least
:data:`MIN_TOKEN_CHARS` characters. With none set, the service refuses to start on a non-loopback host;
on a loopback host it generates a random token for this run and puts it into that variable (so a
client in the same process finds it) — the caller prints it once. No error or log line here names
the token itself, only the variable; tokens are compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from typing import Any

from fastapi import HTTPException, Request
from starlette.responses import JSONResponse

from system.config import MIN_TOKEN_CHARS, OracleConfig
from system.errors import ConfigError, OracleError

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(oracle_cfg: OracleConfig, allow_generate: bool = True) -> tuple[str, bool]:
    """The service token and whether it was generated here.

    Raises:
        ConfigError: ``$<oracle.token_env>`` is set but shorter than :data:`MIN_TOKEN_CHARS`.
        OracleError: no token in ``$<oracle.token_env>`` and the host is not loopback (or generating is not allowed).
    """
    token = configured_token(oracle_cfg)
    if token:
        return token, False
    if not is_loopback(oracle_cfg.host):
        raise OracleError(
            f"oracle.host {oracle_cfg.host!r} is not loopback and ${oracle_cfg.token_env} is empty: "
            "refusing to serve labels without a token"
        )
    if not allow_generate:
        raise OracleError(f"${oracle_cfg.token_env} is empty: set a bearer token for the oracle service")
    token = secrets.token_urlsafe(24)
    os.environ[oracle_cfg.token_env] = token
    logger.warning("no $%s set: generated a token for this run", oracle_cfg.token_env)
    return token, True


def configured_token(oracle_cfg: OracleConfig) -> str:
    """``$<oracle.token_env>`` ('' when unset).

    Raises:
        ConfigError: the token is set but shorter than :data:`MIN_TOKEN_CHARS` (the message names the variable only).
    """
    token = os.environ.get(oracle_cfg.token_env, "")
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"${oracle_cfg.token_env} is shorter than {MIN_TOKEN_CHARS} characters: set a longer bearer token, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return token


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 unless ``Authorization: Bearer <token>`` matches the service token."""
    expected: str = request.app.state.settings.token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')",
                            headers={"WWW-Authenticate": "Bearer"})


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 when a request body exceeds ``app.state.settings.max_request_bytes``.

    Checks ``Content-Length`` up front and counts streamed (chunked) bodies as they arrive.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = scope["app"].state.settings.max_request_bytes
        message = f"request body exceeds oracle.max_request_bytes={limit}"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": f"body: {int(declared)} bytes; {message}"}, 413)(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return event

        async def tracking_send(event: dict[str, Any]) -> None:
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await JSONResponse({"detail": f"body: {message}"}, 413)(scope, receive, send)
