"""Alembic's entry point for the results store: runs the migrations on the connection that
batch_job.ledger.migrate hands over (the job never reads an alembic.ini)."""

from __future__ import annotations

from alembic import context
from batch_job.ledger.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
