"""Schema migrations: a results store made by the code before Alembic, holding results, is upgraded
in place on SQLite and on a real PostgreSQL 15, without losing a row."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from batch_job import migrate
from batch_job.ledger import OK, PENDING, REVIEWED, Ledger
from sqlalchemy import create_engine, inspect, text

from common.objectstore import StoredObject

REPO = Path(__file__).resolve().parent.parent

# What `Base.metadata.create_all` created before migrations (the SQLite and PostgreSQL spellings differ).
OLD_SCHEMA = """
CREATE TABLE results (
    id {serial} NOT NULL,
    object_key VARCHAR(1024) NOT NULL,
    identity VARCHAR(256) NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    size INTEGER NOT NULL,
    last_modified {moment} NOT NULL,
    status VARCHAR(16) NOT NULL,
    category VARCHAR(128),
    probability FLOAT,
    top3 JSON,
    model_name VARCHAR(128),
    error TEXT,
    attempts INTEGER NOT NULL,
    run_id VARCHAR(64),
    lease_until {moment},
    created_at {moment} NOT NULL,
    claimed_at {moment},
    finished_at {moment},
    latency_ms FLOAT,
    PRIMARY KEY (id),
    CONSTRAINT uq_results_object_model UNIQUE (object_key, identity, model_version)
);
CREATE INDEX ix_results_status ON results (status);
CREATE INDEX ix_results_object_key ON results (object_key);
CREATE INDEX ix_results_run_id ON results (run_id);
CREATE TABLE runs (
    run_id VARCHAR(64) NOT NULL,
    shard VARCHAR(16) NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    started_at {moment} NOT NULL,
    finished_at {moment},
    newest_partition DATE,
    summary JSON,
    PRIMARY KEY (run_id)
)
"""
SPELLING = {
    "sqlite": {"serial": "INTEGER", "moment": "DATETIME"},
    "postgresql": {"serial": "SERIAL", "moment": "TIMESTAMP WITH TIME ZONE"},
}
ROWS = 40


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")


def create_old_store(url: str) -> None:
    """A store as the previous code left it: finished and pending results, and a finished run."""
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in OLD_SCHEMA.format(**SPELLING[engine.dialect.name]).split(";"):
            connection.execute(text(statement))
        moment = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
        for i in range(ROWS):
            done = i % 4 != 0
            connection.execute(
                text(
                    "INSERT INTO results (object_key, identity, model_version, size, last_modified, status,"
                    " category, probability, top3, model_name, attempts, run_id, created_at, finished_at)"
                    " VALUES (:key, :identity, 'v1', 10, :moment, :status, :category, :probability, :top3,"
                    " :model_name, 1, 'night-1', :moment, :finished)"
                ),
                {
                    "key": f"inbox/2026-11-23/{i}.jpg",
                    "identity": f"etag-{i}",
                    "moment": moment,
                    "status": OK if done else PENDING,
                    "category": "Discs" if done else None,
                    "probability": 0.9 if done else None,
                    "top3": '[{"category": "Discs", "probability": 0.9}]' if done else None,
                    "model_name": "refund-classifier" if done else None,
                    "finished": moment + timedelta(minutes=1) if done else None,
                },
            )
        connection.execute(
            text(
                "INSERT INTO runs VALUES ('night-1', '0/1', 'v1', :moment, :moment, '2026-11-23',"
                " '{\"processed\": 30}')"
            ),
            {"moment": moment},
        )
    engine.dispose()


def head() -> str:
    return ScriptDirectory.from_config(migrate.alembic_config(None)).get_current_head()


def revision_of(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as connection:
        revision = migrate.current_revision(connection)
    engine.dispose()
    return revision


def test_a_store_of_the_previous_schema_is_upgraded_without_losing_a_row(database_url):
    create_old_store(database_url)
    assert revision_of(database_url) is None

    ledger = Ledger(database_url)  # every start upgrades to head

    assert revision_of(database_url) == head()
    rows = ledger.results()
    assert len(rows) == ROWS
    assert sum(row.status == OK for row in rows) == 30 and sum(row.status == PENDING for row in rows) == 10
    finished = next(row for row in rows if row.status == OK)
    assert finished.category == "Discs" and finished.top3 == [{"category": "Discs", "probability": 0.9}]
    assert ledger.newest_finished_partition("0/1").isoformat() == "2026-11-23"
    # The upgraded store keeps working: its pending rows are claimed, a new object registers once.
    claimable = ledger.claimable()
    assert len(claimable) == 10
    new = StoredObject("inbox/2026-11-24/new.jpg", 5, datetime(2026, 11, 24, tzinfo=UTC), "etag-new")
    assert ledger.register([new]) == 1 and ledger.count_rows() == ROWS + 1


def test_the_migrate_command_upgrades_and_is_idempotent(database_url):
    create_old_store(database_url)
    command = [sys.executable, "-m", "batch_job", "migrate", "--database-url", database_url]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"at revision {head()} (was {migrate.BASELINE})" in first.stdout
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"at revision {head()} (was {head()})" in again.stdout
    assert Ledger(database_url).count_rows() == ROWS


def test_processes_migrating_a_fresh_store_together_all_succeed(database_url):
    """Shards of an Indexed Job open a fresh store at once: one migrates, the others wait and find it done."""
    command = [sys.executable, "-m", "batch_job", "migrate", "--database-url", database_url]
    shards = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    for shard in shards:
        assert shard.wait(timeout=120) == 0, shard.stderr.read()
    assert revision_of(database_url) == head()


def test_revision_0005_adds_the_export_stamp_and_keeps_decisions(database_url):
    """A store at 0004 holding a reviewed decision: upgraded, the decision is there and counts as not exported."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0004")
        connection.execute(
            text(
                "INSERT INTO results (object_key, identity, model_version, size, last_modified, status, category,"
                " attempts, created_at, final_category, reviewed_by, reviewed_at)"
                " VALUES ('inbox/a.jpg', 'e1', 'v1', 10, :moment, 'reviewed', 'Discs', 1, :moment, 'Rings', 'alice',"
                " :moment)"
            ),
            {"moment": datetime(2026, 12, 5, 2, 0, tzinfo=UTC)},
        )
    engine.dispose()

    ledger = Ledger(database_url)

    assert revision_of(database_url) == head()
    assert "exported_at" in {column["name"] for column in inspect(ledger.engine).get_columns("results")}
    [row] = ledger.results()
    assert (row.status, row.final_category, row.reviewed_by, row.exported_at) == (REVIEWED, "Rings", "alice", None)
