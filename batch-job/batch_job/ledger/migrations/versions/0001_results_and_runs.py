"""The results store as it was before migrations: results (one row per object version) and runs.

Databases created by `create_all` before Alembic hold exactly this schema; batch_job.ledger.migrate
stamps them at this revision instead of creating the tables again.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
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
        "results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("object_key", sa.String(1024), nullable=False),
        sa.Column("identity", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("category", sa.String(128)),
        sa.Column("probability", sa.Float()),
        sa.Column("top3", sa.JSON()),
        sa.Column("model_name", sa.String(128)),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("latency_ms", sa.Float()),
        sa.UniqueConstraint("object_key", "identity", "model_version", name="uq_results_object_model"),
    )
    op.create_index("ix_results_status", "results", ["status"])
    op.create_index("ix_results_object_key", "results", ["object_key"])
    op.create_index("ix_results_run_id", "results", ["run_id"])
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("shard", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("newest_partition", sa.Date()),
        sa.Column("summary", sa.JSON()),
    )


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("results")
