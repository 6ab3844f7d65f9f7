"""Where a photo is while its move is due (results.route_from): a decided photo leaves review/, not the inbox.

A row's move is due while route_to is set and routed_at is not; it starts from route_from, or from the inbox
(object_key) where route_from is NULL. A decision records its move in its own UPDATE, from where the photo is
as that UPDATE finds the row, so a move the review page could not make is made by the next night's routing.
A night that moved a photo into review/ while a decision changed its destination records that the photo
is in review/ now (the move due starts there) instead of marking the row routed. Rows from before this
revision have none: their moves, if any are due, start from the inbox as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("route_from", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("route_from")
