"""Tables of the durable label store (SQLAlchemy Core; created and upgraded by alembic).

``labels`` holds one oracle verdict per (pair_id, oracle, annotator) — the unique key that makes
every write idempotent. ``tasks`` is the human-annotation queue: one row per pair waiting for a person;
``annotators`` the people who answer it; a human label records how long its answer took (``answer_ms``) and
the guidelines it was given under (``guidelines_digest``, the SHA-256 of the guidelines file), its ``choice``
(``1``, ``2``, ``tie`` or ``both_bad``; ``preferred`` and ``prob_1`` follow from it), ``strength`` and
``rationale``; an aggregate row names the reviewer whose decision it is (``adjudicated_by``).
Prompts are stored as JSON text because a prompt is either a string or a conversation. Every row keeps
``text_digest`` (:func:`~system.types.pair_text_digest` of its prompt and responses): a pair id is bound to
the texts it was first stored with, in both tables, and the store refuses it with other texts.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_REVISION = "0006"
"""The alembic revision this code reads and writes; a store at any other head is refused."""

metadata = MetaData()

labels_table = Table(
    "labels",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("pair_id", String(128), nullable=False),
    Column("round", Integer, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("response_1", Text, nullable=False),
    Column("response_2", Text, nullable=False),
    Column("text_digest", String(64), nullable=False, server_default=""),
    Column("preferred", SmallInteger, nullable=False),
    Column("prob_1", Float, nullable=False),
    Column("oracle", String(64), nullable=False),
    Column("model_version", String(256), nullable=False, server_default=""),
    Column("annotator", String(128), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("answer_ms", Integer, nullable=True),
    Column("guidelines_digest", String(64), nullable=False, server_default=""),
    Column("choice", String(16), nullable=False, server_default=""),
    Column("strength", String(16), nullable=False, server_default=""),
    Column("rationale", Text, nullable=False, server_default=""),
    Column("adjudicated_by", String(64), nullable=False, server_default=""),
    UniqueConstraint("pair_id", "oracle", "annotator", name="uq_labels_pair_oracle_annotator"),
    Index("ix_labels_round", "round"),
)

tasks_table = Table(
    "tasks",
    metadata,
    Column("task_id", Integer, primary_key=True, autoincrement=True),
    Column("pair_id", String(128), nullable=False, unique=True),
    Column("round", Integer, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("response_1", Text, nullable=False),
    Column("response_2", Text, nullable=False),
    Column("text_digest", String(64), nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("skips", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("gold", String(16), nullable=False, server_default=""),
    Index("ix_tasks_status", "status", "skips", "task_id"),
)

annotators_table = Table(
    "annotators",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("name_key", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
"""People who answer tasks: each has a personal bearer token, kept only as its SHA-256; ``name_key`` (the
name case-folded) keeps ``Alice`` and ``alice`` from being two people."""

adjudications_table = Table(
    "adjudications",
    metadata,
    Column("pair_id", String(128), primary_key=True),
    Column("reviewer", String(64), nullable=False),
    Column("choice", String(16), nullable=False),
    Column("rationale", Text, nullable=False, server_default=""),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)
"""A reviewer's final decision on a pair whose answers disagreed (one per pair)."""

gold_answers_table = Table(
    "gold_answers",
    metadata,
    Column("task_id", Integer, primary_key=True, autoincrement=False),
    Column("annotator", String(64), primary_key=True),
    Column("choice", String(16), nullable=False),
    Column("answer_ms", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""Answers to gold pairs (tasks with a known ``gold`` answer): kept apart from ``labels``, so they never reach
training or an export of labels; they measure each annotator's accuracy."""

rounds_table = Table(
    "rounds",
    metadata,
    Column("round", Integer, primary_key=True, autoincrement=False),
    Column("consumed_at", DateTime(timezone=True), nullable=False),
)
"""Rounds whose labels the loop took for training (``POST /v1/rounds/{round}/consume``): their answers are final."""

reservations_table = Table(
    "reservations",
    metadata,
    Column("task_id", Integer, primary_key=True, autoincrement=False),
    Column("annotator", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
"""A task handed to a person and not answered yet: it holds one of the task's k places until ``expires_at``, so
people asking at the same moment are not all handed the one place left. A person holds at most one."""
