"""Review sessions kept in the results store (review_sessions), so logging out and removing a reviewer end them.

The session cookie carries a random token; the store keeps its SHA-256 digest, the reviewer and when the
session ends. A request whose token has no live row here is logged out, whatever the cookie's signature says.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_sessions",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("reviewer", sa.String(128), nullable=False, index=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("review_sessions")
