"""The guidelines an answer was given under: the SHA-256 of the guidelines file shown to the annotator.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("labels", sa.Column("guidelines_digest", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("guidelines_digest")
