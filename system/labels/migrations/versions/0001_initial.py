"""Initial schema: labels (unique on pair_id, oracle, annotator) and the human task queue.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labels",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pair_id", sa.String(128), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("response_1", sa.Text, nullable=False),
        sa.Column("response_2", sa.Text, nullable=False),
        sa.Column("preferred", sa.SmallInteger, nullable=False),
        sa.Column("prob_1", sa.Float, nullable=False),
        sa.Column("oracle", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(256), nullable=False, server_default=""),
        sa.Column("annotator", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("pair_id", "oracle", "annotator", name="uq_labels_pair_oracle_annotator"),
    )
    op.create_index("ix_labels_round", "labels", ["round"])
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pair_id", sa.String(128), nullable=False, unique=True),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("response_1", sa.Text, nullable=False),
        sa.Column("response_2", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("skips", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tasks_status", "tasks", ["status", "skips", "task_id"])


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("labels")
