"""The classes the review page offers (categories), and runs.full_listing dropped.

The review page listed its classes with SELECT DISTINCT category over every result, on every page view: a scan
that grows with years of nights. The night now adds the classes of the model it is served by at its start
(INSERT ... ON CONFLICT DO NOTHING); this revision fills the table with the categories results already hold.
full_listing said which runs listed every partition; every run has since the watermark went, so nothing reads it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("categories", sa.Column("name", sa.String(128), primary_key=True))
    op.execute("INSERT INTO categories (name) SELECT DISTINCT category FROM results WHERE category IS NOT NULL")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("full_listing")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("full_listing", sa.Boolean()))
    op.drop_table("categories")
