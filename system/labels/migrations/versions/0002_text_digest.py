"""Bind every stored pair to its texts: ``text_digest`` on labels and tasks, filled in for the rows already there.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from system.types import pair_text_digest

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEYS = {"labels": "seq", "tasks": "task_id"}


def upgrade() -> None:
    connection = op.get_bind()
    for table_name, key in KEYS.items():
        op.add_column(table_name, sa.Column("text_digest", sa.String(64), nullable=False, server_default=""))
        table = sa.table(table_name, sa.column(key), sa.column("prompt"), sa.column("response_1"),
                         sa.column("response_2"), sa.column("text_digest"))
        rows = connection.execute(sa.select(table.c[key], table.c.prompt, table.c.response_1, table.c.response_2))
        digests = [{"row_key": row[0], "digest": pair_text_digest(json.loads(row.prompt), row.response_1,
                                                                   row.response_2)} for row in rows]
        if digests:
            by_key = table.c[key] == sa.bindparam("row_key")
            connection.execute(table.update().where(by_key).values(text_digest=sa.bindparam("digest")), digests)


def downgrade() -> None:
    for table_name in KEYS:
        with op.batch_alter_table(table_name) as batch:  # SQLite drops a column by copying the table
            batch.drop_column("text_digest")
