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
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
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


@dataclass(frozen=True)
class Principal:
    """Who a request's bearer token belongs to: the run token is the administrator (``name`` empty), an
    annotator's token that annotator (role ``annotator`` or ``reviewer``)."""

    name: str
    role: str


ADMIN = Principal(name="", role="admin")


def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the :class:`Principal` of ``Authorization: Bearer <token>``; 401 for no or an unknown
    (or revoked) token. The run token is compared in constant time; an annotator's token is looked up by its hash."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer" and given:
        if hmac.compare_digest(given.encode(), request.app.state.settings.token.encode()):
            return ADMIN
        annotator = request.app.state.annotators.authenticate(given)
        if annotator is not None:
            return Principal(name=annotator.name, role=annotator.role)
    raise HTTPException(401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')",
                        headers={"WWW-Authenticate": "Bearer"})


def require_admin(principal: Principal = Depends(authenticate)) -> Principal:
    """The run token only: labelling, label reads and rewards are for machines and the administrator."""
    if principal.role != "admin":
        raise HTTPException(403, "this route needs the run token; an annotator's token fetches and answers tasks")
    return principal


def require_reviewer(principal: Principal = Depends(authenticate)) -> Principal:
    """The run token or a reviewer's: agreement statistics name every annotator."""
    if principal.role not in ("admin", "reviewer"):
        raise HTTPException(403, "this route needs a reviewer's token or the run token")
    return principal


def require_person_reviewer(principal: Principal = Depends(authenticate)) -> Principal:
    """A reviewer's own token: a decision on a disagreement is final and recorded under the reviewer's name."""
    if principal.role != "reviewer":
        raise HTTPException(403, "this route needs a reviewer's own token (activealign annotators add NAME --role "
                                 "reviewer)")
    return principal


def require_annotator(principal: Principal = Depends(authenticate)) -> Principal:
    """An annotator's own token: every answer is attributed to the token's holder."""
    if principal.role == "admin":
        raise HTTPException(403, "answer with an annotator's own token (activealign annotators add NAME), not "
                                 "the run token")
    return principal


class HttpMiddleware:
    """An ASGI middleware that acts on HTTP requests (:meth:`handle`) and passes anything else (lifespan) through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise NotImplementedError


class BodySizeLimit(HttpMiddleware):
    """ASGI middleware: 413 when a request body exceeds ``app.state.settings.max_request_bytes``.

    A declared ``Content-Length`` over the limit is refused before the body is read. Otherwise the body is read
    here, counted as it streams in (chunked bodies declare no length), and handed to the app only once it is
    whole and within the limit: an oversized body never reaches the app's JSON parser, which would answer 400.
    The rest of a refused body is read and dropped (up to :data:`DRAIN_FACTOR` times the limit), so a client
    still sending gets the 413 rather than a broken connection.
    """

    DRAIN_FACTOR = 64

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit: int = scope["app"].state.settings.max_request_bytes
        message = f"request body exceeds oracle.max_request_bytes={limit}"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": f"body: {int(declared)} bytes; {message}"}, 413)(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            event = await receive()
            if event["type"] == "http.disconnect":
                return  # the client is gone: nobody to answer
            chunk = event.get("body", b"")
            received += len(chunk)
            more = bool(event.get("more_body", False))
            if received > limit:
                while more and received <= self.DRAIN_FACTOR * limit:
                    event = await receive()
                    received += len(event.get("body", b""))
                    more = event["type"] == "http.request" and bool(event.get("more_body", False))
                await JSONResponse({"detail": f"body: {message}"}, 413)(scope, receive, send)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""Content-Security-Policy of every answer but the API docs: scripts, styles and calls from this origin only,
no inline script, and no page of another site may frame it (the annotator's buttons cannot be clicked through)."""

DOCS_POLICY = "frame-ancestors 'none'"
"""``/docs`` and ``/redoc`` are FastAPI's pages, which load their scripts from a CDN: they keep only the framing
rule (and need the internet to render)."""

DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders(HttpMiddleware):
    """ASGI middleware: :data:`PAGE_POLICY` (or :data:`DOCS_POLICY`) as ``Content-Security-Policy``, plus
    ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` on every
    HTTP answer."""

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        policy = DOCS_POLICY if path.startswith(DOCS_PATHS) else PAGE_POLICY
        extra = [(b"content-security-policy", policy.encode()), (b"x-frame-options", b"DENY"),
                 (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

        async def send_with_headers(event: dict[str, Any]) -> None:
            if event["type"] == "http.response.start":
                event = {**event, "headers": [*event.get("headers", []), *extra]}
            await send(event)

        await self.app(scope, receive, send_with_headers)
