"""When `refund-batch export-labels` first wrote a reviewed item into a dataset (results.exported_at).

A decision an export has taken can no longer be undone: the dataset already carries its label. Rows from
before this revision have none, so decisions exported by an earlier version count as not exported (the
10-minute undo window has long closed for them anyway).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("exported_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("exported_at")
