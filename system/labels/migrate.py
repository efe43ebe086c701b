"""Open a label-store database and bring its schema to the revision this code expects.

Alembic runs programmatically (no ``alembic.ini``): the scripts live in ``system/labels/migrations``.
SQLite connections get WAL journaling, a busy timeout and ``synchronous=NORMAL`` (durable against a
killed process; WAL keeps readers and the single writer from blocking each other).

Several processes and threads may open a fresh store at once (oracle replicas, trainers): a migration
runs under the store's write lock (:func:`lock_store`) and a process-wide thread lock (alembic keeps
its running migration in module globals), and re-reads the revision once it holds them, so exactly
one opener migrates and the others find the schema ready.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from system.errors import LabelStoreError
from system.labels.schema import SCHEMA_REVISION

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
STORE_LOCK_KEY = 0x6C6162656C73  # "labels": the PostgreSQL advisory lock held by migrations and writers
_alembic_lock = threading.Lock()


def absolute_store_url(url: str, base: str | Path | None = None) -> str:
    """Make a relative SQLite path absolute (against ``base`` or the cwd) so other processes find the same file."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LabelStoreError(f"label store url {url!r}: not a database URL") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    path = Path(parsed.database)  # type: ignore[arg-type]
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return parsed.set(database=str(path.resolve())).render_as_string(hide_password=False)


SQLITE_BUSY_TIMEOUT_S = 30.0


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL journaling, ``synchronous=NORMAL`` and the busy timeout on every new SQLite connection.

    Switching a fresh database to WAL needs the database to itself, and SQLite answers "database is locked" at
    once, without its busy handler, while another connection holds a lock (another opener creating the schema):
    the switch is retried until the busy timeout. WAL persists in the file, so once one connection switched it,
    the others' switch is a no-op.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their parent directory created and WAL mode."""
    url = absolute_store_url(url)
    parsed = make_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise LabelStoreError(f"label store {parsed.render_as_string()}: cannot open ({exc})") from None


def current_revision(engine: Engine) -> str | None:
    """The alembic revision stamped in the database (None for an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def lock_store(connection: Connection) -> None:
    """Take the store's single write lock until ``connection``'s transaction ends; other writers wait for it.

    SQLite: ``BEGIN IMMEDIATE`` (its database write lock, now rather than at the first write).
    PostgreSQL: a transaction-scoped advisory lock. Serialised writers cannot deadlock on each other's
    unique keys, and ``seq`` values become visible in commit order, so a reader paging by ``seq`` never
    skips a row that an earlier-numbered writer committed late.
    """
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STORE_LOCK_KEY})


def run_migrations(connection: Connection, revision: str) -> None:
    """Upgrade the database behind ``connection`` to alembic ``revision``, inside the connection's transaction."""
    alembic_cfg = AlembicConfig()
    alembic_cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    alembic_cfg.attributes["connection"] = connection
    with _alembic_lock:
        command.upgrade(alembic_cfg, revision)


def upgrade_schema(engine: Engine) -> None:
    """Run every pending migration, then check the database is at :data:`SCHEMA_REVISION`.

    Raises:
        LabelStoreError: the database is unreachable, or stamped with a revision this code does not know
            (written by a newer activealign).
    """
    where = engine.url.render_as_string()
    found: str | None = None
    try:
        found = current_revision(engine)
        if found != SCHEMA_REVISION:
            with engine.begin() as connection:
                lock_store(connection)
                found = MigrationContext.configure(connection).get_current_revision()
                if found != SCHEMA_REVISION:  # another opener may have migrated while we waited
                    logger.info("label store %s: migrating schema %s -> %s", where, found, SCHEMA_REVISION)
                    run_migrations(connection, SCHEMA_REVISION)
        found = current_revision(engine)
    except SQLAlchemyError as exc:
        raise LabelStoreError(f"label store {where}: cannot migrate ({exc.__class__.__name__}: {exc})") from None
    except CommandError as exc:
        raise LabelStoreError(f"label store {where}: schema revision {found!r} unknown here ({exc})") from None
    if found != SCHEMA_REVISION:
        raise LabelStoreError(f"label store {where}: schema at revision {found!r}, expected {SCHEMA_REVISION!r}")
