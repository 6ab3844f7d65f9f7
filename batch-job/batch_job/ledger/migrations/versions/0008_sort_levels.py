"""The level a result was sorted to (results.sort_level, results.sorted_as) and what the review page offers
first for an item left to a person (results.offered).

An item whose article type is in doubt may still be certainly footwear: the night sorts it to its
subcategory or master category (common.sorting). sort_level is article, sub or master on OK rows, sorted_as
the category path joined by "/" (Footwear/Shoes); offered, on needs_review rows, the upper-level group the
model is surest of, its probability and which of the top 3 lie under it. Rows from before this revision have
none: their OK rows were sorted at the article level, to their category.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("sort_level", sa.String(16)))
        batch.add_column(sa.Column("sorted_as", sa.Text()))
        batch.add_column(sa.Column("offered", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("offered")
        batch.drop_column("sorted_as")
        batch.drop_column("sort_level")
