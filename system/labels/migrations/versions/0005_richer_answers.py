"""Richer answers, adjudication, gold pairs and consumed rounds.

``labels`` gains ``choice`` (``1``, ``2``, ``tie`` or ``both_bad``; filled in from ``preferred`` for the rows
already there), an answer's ``strength`` and ``rationale``, and ``adjudicated_by`` (the reviewer behind an
aggregate); ``tasks`` gains ``gold`` (a gold pair's known answer); new tables hold reviewers' decisions, answers
to gold pairs, and the rounds whose labels training consumed.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LABEL_COLUMNS = ("choice", "strength", "rationale", "adjudicated_by")


def upgrade() -> None:
    op.add_column("labels", sa.Column("choice", sa.String(16), nullable=False, server_default=""))
    op.add_column("labels", sa.Column("strength", sa.String(16), nullable=False, server_default=""))
    op.add_column("labels", sa.Column("rationale", sa.Text, nullable=False, server_default=""))
    op.add_column("labels", sa.Column("adjudicated_by", sa.String(64), nullable=False, server_default=""))
    labels = sa.table("labels", sa.column("preferred"), sa.column("choice"))
    op.get_bind().execute(labels.update().values(
        choice=sa.case((labels.c.preferred == 1, sa.literal("1")), else_=sa.literal("2"))))
    op.add_column("tasks", sa.Column("gold", sa.String(16), nullable=False, server_default=""))
    op.create_table(
        "adjudications",
        sa.Column("pair_id", sa.String(128), primary_key=True),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("rationale", sa.Text, nullable=False, server_default=""),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "gold_answers",
        sa.Column("task_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("annotator", sa.String(64), primary_key=True),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("answer_ms", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rounds",
        sa.Column("round", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("rounds", "gold_answers", "adjudications"):
        op.drop_table(table)
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("gold")
    with op.batch_alter_table("labels") as batch:
        for column in LABEL_COLUMNS:
            batch.drop_column(column)
