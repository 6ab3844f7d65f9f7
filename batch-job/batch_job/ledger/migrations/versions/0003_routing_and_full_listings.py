"""Routing state (results.route_to, results.routed_at) and which runs listed every partition (runs.full_listing).

Routing runs after the commit and may fail or be interrupted; a row with route_to set and no
routed_at is routed again by the next run. Rows from before this revision have neither, so
turning routing on never moves yesterday's images retroactively. Runs from before this revision
count as incremental listings, so the first run after it lists every partition once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("route_to", sa.String(1024)))
        batch.add_column(sa.Column("routed_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("full_listing", sa.Boolean()))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("full_listing")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("routed_at")
        batch.drop_column("route_to")
