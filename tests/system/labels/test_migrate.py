"""Schema upgrades keep the labels: a store built at the oldest alembic revision and holding labels is brought to
head by opening it (``LabelStore`` → ``upgrade_schema``), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from datetime import datetime, timezone

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table

from system.errors import PairTextConflictError
from system.labels import LabelStore
from system.labels.migrate import MIGRATIONS_DIR, create_store_engine, current_revision, run_migrations
from system.labels.schema import SCHEMA_REVISION
from system.labels.store import encode_text
from system.types import CandidatePair, Label

WRITTEN_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
OLD_LABELS = [  # (pair_id, round, prompt, response_1, response_2, preferred, prob_1, oracle, annotator)
    ("p0", 1, "Say hi", "hi!", "no.", 1, 0.81, "reward_model", ""),
    ("p1", 1, [{"role": "user", "content": "Name a cat"}], "Tom", "Rex", 2, 0.27, "reward_model", ""),
    ("p1", 2, [{"role": "user", "content": "Name a cat"}], "Tom", "Rex", 1, 1.0, "human", "alice"),
]


def oldest_revision() -> str:
    (base,) = ScriptDirectory(str(MIGRATIONS_DIR)).get_bases()
    return str(base)


def test_labels_written_at_the_oldest_revision_survive_the_upgrade_to_head(store_url: str) -> None:
    engine = create_store_engine(store_url)
    with engine.begin() as connection:
        run_migrations(connection, oldest_revision())
    with engine.begin() as connection:
        labels = Table("labels", MetaData(), autoload_with=connection)  # the table as the oldest revision made it
        for pair_id, round_, prompt, response_1, response_2, preferred, prob_1, oracle, annotator in OLD_LABELS:
            connection.execute(labels.insert().values(
                pair_id=pair_id, round=round_, prompt=encode_text(prompt), response_1=response_1,
                response_2=response_2, preferred=preferred, prob_1=prob_1, oracle=oracle, model_version="m0",
                annotator=annotator, created_at=WRITTEN_AT,
            ))
    assert current_revision(engine) == oldest_revision()
    engine.dispose()

    with LabelStore(store_url) as store:
        assert current_revision(store.engine) == SCHEMA_REVISION
        records = store.labels()
        assert [(r.pair_id, r.round, r.prompt, r.response_1, r.response_2, r.preferred, r.prob_1, r.oracle,
                 r.annotator) for r in records] == OLD_LABELS
        assert all(r.model_version == "m0" and r.created_at == WRITTEN_AT for r in records)
        # every old verdict's choice filled in from its preferred response; no strength, rationale or reviewer
        assert [r.choice for r in records] == [str(preferred) for *_, preferred, _, _, _ in OLD_LABELS]
        assert all((r.strength, r.rationale, r.adjudicated_by) == ("", "", "") for r in records)
        # the upgrade bound every old row to its texts: digests computed here from the texts written above
        canonical = [json.dumps([prompt, r1, r2], ensure_ascii=False, separators=(",", ":"), sort_keys=True)
                     for _, _, prompt, r1, r2, *_ in OLD_LABELS]
        expected = [hashlib.sha256(text.encode()).hexdigest() for text in canonical]
        assert [r.text_digest for r in records] == expected
        changed = CandidatePair(pair_id="p0", prompt_id="x0", prompt="Say hi", response_1="no.", response_2="hi!")
        with pytest.raises(PairTextConflictError):
            store.check_texts([changed])
        # the upgraded store goes on numbering after the old rows and keeps their keys unique
        pair = CandidatePair(pair_id="p2", prompt_id="x2", prompt="q", response_1="a", response_2="b")
        assert store.put([Label("p2", 1, 0.6, "reward_model"), Label("p0", 2, 0.1, "reward_model")],
                         [pair, records[0].pair], round=3) == 1
        assert store.labels(since=records[-1].seq)[0].pair_id == "p2"


def test_a_new_connection_waits_for_a_writer_instead_of_failing_its_wal_switch(tmp_path) -> None:
    """A connection opened while another holds the write lock of a fresh (not yet WAL) database waits for it:
    SQLite refuses the journal-mode switch at once, without its busy handler, and the switch is retried."""
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x)")
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    with create_store_engine(f"sqlite:///{path}").connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal" and time.monotonic() - started >= 0.4
    holder.close()
