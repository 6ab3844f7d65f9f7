"""Review decisions: who decided an item on the review page, when, and the final category.

The model's own answer (category, probability, top3) stays in its columns for the audit trail;
a decided item's status becomes `reviewed` (final_category set) or `unusable`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("final_category", sa.String(128)))
        batch.add_column(sa.Column("reviewed_by", sa.String(128)))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True)))
        batch.create_index("ix_results_reviewed_at", ["reviewed_at"])


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_index("ix_results_reviewed_at")
        batch.drop_column("reviewed_at")
        batch.drop_column("reviewed_by")
        batch.drop_column("final_category")
