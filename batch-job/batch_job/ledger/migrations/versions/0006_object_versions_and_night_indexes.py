"""One row per object version whatever model answers it; sizes of 2 GiB and more; keys and routes of any
length; an index for what every night reads.

- The unique key becomes (object_key, identity): (object_key, identity, model_version) covered only the empty
  placeholder version, so a run registering an object that another run had meanwhile answered added a second
  row (whose answer then failed its whole commit on the old key). Duplicates already there are reduced to the
  most advanced row of each object version: a reviewer's decision, else a model's answer, else a failure,
  else pending; the newest among equals. It leads with object_key, so the plain index on object_key goes.
- results.size becomes BIGINT (a phone video of 2 GiB made every registration fail on PostgreSQL).
- results.object_key and route_to become TEXT: a route is its key with inbox/ replaced by the longer
  sorted/<category>/, which VARCHAR(1024) refused inside a night's commit (SQLite never enforced it).
- A partial index on the rows still to route (every night's routing retry read the whole table); it holds
  only those rows. Pending rows and the review queue are found through ix_results_status.

On PostgreSQL the size change rewrites the table under an exclusive lock (seconds for a million rows).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Ascending: the row of an object version to keep comes first.
KEEP_FIRST = """
    CASE status WHEN 'reviewed' THEN 0 WHEN 'unusable' THEN 0 WHEN 'ok' THEN 1 WHEN 'needs_review' THEN 1
                WHEN 'failed' THEN 2 WHEN 'dead' THEN 2 ELSE 3 END,
    CASE WHEN routed_at IS NULL THEN 1 ELSE 0 END,
    id DESC
"""
UNROUTED_ROWS = "route_to IS NOT NULL AND routed_at IS NULL"


def upgrade() -> None:
    op.execute(
        f"""
        DELETE FROM results WHERE id IN (
            SELECT id FROM (
                SELECT id, ROW_NUMBER() OVER (PARTITION BY object_key, identity ORDER BY {KEEP_FIRST}) AS place
                FROM results
            ) AS ranked
            WHERE place > 1
        )
        """
    )
    op.drop_index("ix_results_object_key", table_name="results")
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint("uq_results_object_model", type_="unique")
        batch.alter_column("size", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)
        batch.alter_column("object_key", existing_type=sa.String(1024), type_=sa.Text(), existing_nullable=False)
        batch.alter_column("route_to", existing_type=sa.String(1024), type_=sa.Text(), existing_nullable=True)
        batch.create_unique_constraint("uq_results_object_version", ["object_key", "identity"])
    where = sa.text(UNROUTED_ROWS)
    op.create_index("ix_results_unrouted", "results", ["object_key"], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    """Refused by rows the old schema cannot hold: a size of 2 GiB or more, a key or route over 1,024 characters."""
    op.drop_index("ix_results_unrouted", table_name="results")
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint("uq_results_object_version", type_="unique")
        batch.alter_column("route_to", existing_type=sa.Text(), type_=sa.String(1024), existing_nullable=True)
        batch.alter_column("object_key", existing_type=sa.Text(), type_=sa.String(1024), existing_nullable=False)
        batch.alter_column("size", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
        batch.create_unique_constraint("uq_results_object_model", ["object_key", "identity", "model_version"])
    op.create_index("ix_results_object_key", "results", ["object_key"])
