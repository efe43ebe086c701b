"""Annotators: named people with personal bearer tokens and a role, kept in the label store.

A token is shown once, when the annotator is added, and stored only as its SHA-256 (a token is 32 random
URL-safe characters, so a plain hash cannot be searched backwards). The service maps a request's token to
its annotator, so an answer is attributed to whoever holds the token, never to a name the request carries.
Names are letters, digits, ``.``, ``_``, ``-`` and inner spaces (1–64 characters, Unicode letters included);
two names that differ only in case or Unicode form (``Alice``, ``alice``, ``ａｌｉｃｅ``) are one person.
Roles: ``annotator`` answers tasks; ``reviewer`` too (the role adjudication will use). The run token
(``$ACTIVEALIGN_API_TOKEN``) stays the machines' and the administrator's.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from system.errors import ConfigError, LabelStoreError
from system.labels.migrate import lock_store
from system.labels.schema import annotators_table
from system.labels.store import LabelStore

Role = Literal["annotator", "reviewer"]
ROLES: tuple[Role, ...] = ("annotator", "reviewer")
NAME_PATTERN = re.compile(r"\w(?:[\w. -]{0,62}[\w.-])?")
"""1–64 characters: Unicode letters and digits, ``_ . -`` and spaces inside (no zero-width or control
characters, no leading or trailing space)."""


@dataclass(frozen=True)
class Annotator:
    """A person who answers tasks (``revoked_at`` set once their token stops working)."""

    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None


def annotator_name(raw: str) -> str:
    """``raw`` in Unicode NFKC form, checked against :data:`NAME_PATTERN`.

    Raises:
        ConfigError: naming the problem (e.g. ``'alice\\u200b'``: a zero-width space is no name character).
    """
    name = unicodedata.normalize("NFKC", raw)
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"annotator name {raw!r}: use 1-64 letters, digits, '.', '_', '-' or inner spaces")
    return name


def token_hash(token: str) -> str:
    """SHA-256 (hex) of a bearer token: what the store keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _annotator(row: Any) -> Annotator:
    def aware(moment: datetime | None) -> datetime | None:
        return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=timezone.utc)

    created_at = aware(row.created_at)
    assert created_at is not None
    return Annotator(name=row.name, role=row.role, created_at=created_at, revoked_at=aware(row.revoked_at))


class AnnotatorRegistry:
    """The annotators of ``store`` (same database as the labels they give)."""

    def __init__(self, store: LabelStore) -> None:
        self.store = store

    def add(self, name: str, role: Role = "annotator") -> tuple[Annotator, str]:
        """Add an annotator; returns them and their token (shown once: only its hash is stored).

        Raises:
            ConfigError: a bad name or role, or the name is taken (in any case or Unicode form).
        """
        if role not in ROLES:
            raise ConfigError(f"annotator role {role!r}: expected one of {', '.join(ROLES)}")
        name = annotator_name(name)
        token = secrets.token_urlsafe(24)
        created_at = datetime.now(timezone.utc)
        row = {"name": name, "name_key": name.casefold(), "role": role, "token_hash": token_hash(token),
               "created_at": created_at}
        try:
            with self.store.engine.begin() as connection:
                lock_store(connection)
                connection.execute(insert(annotators_table).values(**row))
        except IntegrityError:
            raise ConfigError(f"annotator {name!r}: the name is taken") from None
        except SQLAlchemyError as exc:
            raise LabelStoreError(f"label store {self.store.url}: write failed ({exc.__class__.__name__})") from exc
        return Annotator(name=name, role=role, created_at=created_at), token

    def list(self) -> list[Annotator]:
        """Every annotator, revoked ones included, by name."""
        with self.store.engine.connect() as connection:
            rows = connection.execute(select(annotators_table).order_by(annotators_table.c.name_key))
            return [_annotator(row) for row in rows]

    def revoke(self, name: str) -> Annotator:
        """Stop ``name``'s token from working (their answers stay).

        Raises:
            ConfigError: no such annotator.
        """
        key = annotator_name(name).casefold()
        with self.store.engine.begin() as connection:
            lock_store(connection)
            connection.execute(update(annotators_table).where(
                (annotators_table.c.name_key == key) & annotators_table.c.revoked_at.is_(None)
            ).values(revoked_at=datetime.now(timezone.utc)))
            row = connection.execute(select(annotators_table).where(annotators_table.c.name_key == key)).first()
        if row is None:
            raise ConfigError(f"annotator {name!r}: no such annotator")
        return _annotator(row)

    def authenticate(self, token: str) -> Annotator | None:
        """The annotator whose token this is, unless revoked; None otherwise."""
        query = select(annotators_table).where(
            (annotators_table.c.token_hash == token_hash(token)) & annotators_table.c.revoked_at.is_(None))
        with self.store.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _annotator(row)
