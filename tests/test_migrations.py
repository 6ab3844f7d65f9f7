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
from batch_job.ledger import migrate
from batch_job.ledger.results import Ledger, Verdict
from batch_job.ledger.routing import move_source
from batch_job.ledger.schema import FAILED, NEEDS_REVIEW, OK, PENDING, REVIEWED
from batch_job.night.summary import level_of
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

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
    with ledger.engine.connect() as connection:  # the run's row is kept
        assert str(connection.execute(text("SELECT newest_partition FROM runs")).scalar_one()) == "2026-11-23"
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


DUPLICATES = [  # (key, identity, model_version, status): what two runs registering at once could leave
    ("inbox/a.jpg", "e1", "v-old", "ok"),
    ("inbox/a.jpg", "e1", "", "pending"),  # registered again after v-old answered: the older row is kept
    ("inbox/b.jpg", "e2", "v1", "ok"),
    ("inbox/b.jpg", "e2", "v2", "reviewed"),  # a reviewer's decision outranks a model's answer
    ("inbox/c.jpg", "e3", "v1", "failed"),
    ("inbox/c.jpg", "e3", "", "pending"),
    ("inbox/b.jpg", "e9", "", "pending"),  # a replaced photo: another object version, kept
]


def test_revision_0006_keeps_one_row_per_object_version_and_takes_big_sizes_and_long_keys(database_url):
    """A store at 0005 holding duplicate rows of one object version (under two model versions): upgraded, the
    most advanced row of each is kept; then sizes past 32 bits, long routes and a racing second row fit."""
    engine = create_engine(database_url)
    moment = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0005")
        for key, identity, version, status in DUPLICATES:
            connection.execute(
                text(
                    "INSERT INTO results (object_key, identity, model_version, size, last_modified, status,"
                    " attempts, created_at) VALUES (:key, :identity, :version, 10, :moment, :status, 0, :moment)"
                ),
                {"key": key, "identity": identity, "version": version, "status": status, "moment": moment},
            )
    engine.dispose()

    ledger = Ledger(database_url)

    kept = {(row.object_key, row.identity): (row.model_version, row.status) for row in ledger.results()}
    assert kept == {
        ("inbox/a.jpg", "e1"): ("v-old", OK),
        ("inbox/b.jpg", "e2"): ("v2", REVIEWED),
        ("inbox/c.jpg", "e3"): ("v1", FAILED),
        ("inbox/b.jpg", "e9"): ("", PENDING),
    }
    indexes = {index["name"] for index in inspect(ledger.engine).get_indexes("results")}
    assert "ix_results_unrouted" in indexes
    assert "ix_results_object_key" not in indexes  # the unique key leads with object_key
    with ledger.engine.begin() as connection:
        connection.execute(
            text("UPDATE results SET size = :size, route_to = :route WHERE object_key = 'inbox/a.jpg'"),
            {"size": 5_000_000_000, "route": "sorted/Discs/" + "x" * 2000 + ".jpg"},
        )
    with ledger.engine.connect() as connection:
        second = text(
            "INSERT INTO results (object_key, identity, model_version, size, last_modified, status, attempts,"
            " created_at) VALUES ('inbox/a.jpg', 'e1', '', 10, :moment, 'pending', 0, :moment)"
        )
        with pytest.raises(IntegrityError):  # the key is the object version, whatever model answered it
            connection.execute(second, {"moment": moment})
    row = next(row for row in ledger.results() if row.object_key == "inbox/a.jpg")
    assert (row.size, len(row.route_to)) == (5_000_000_000, len("sorted/Discs/") + 2004)


def test_revision_0007_adds_where_a_due_move_starts_and_keeps_routes(database_url):
    """A store at 0006 with a routed photo and one whose move is due: upgraded, both keep their routes and the
    due move still starts from the inbox; downgraded again, the column goes and the rows stay."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0006")
        for name, routed in (("a", datetime(2026, 12, 5, 2, 1, tzinfo=UTC)), ("b", None)):
            connection.execute(
                text(
                    "INSERT INTO results (object_key, identity, model_version, size, last_modified, status,"
                    " category, attempts, created_at, route_to, routed_at)"
                    " VALUES (:key, 'e1', 'v1', 10, :moment, 'ok', 'Discs', 1, :moment, :route, :routed)"
                ),
                {
                    "key": f"inbox/{name}.jpg",
                    "moment": datetime(2026, 12, 5, 2, 0, tzinfo=UTC),
                    "route": f"sorted/Discs/{name}.jpg",
                    "routed": routed,
                },
            )
    engine.dispose()

    ledger = Ledger(database_url)

    assert revision_of(database_url) == head()
    [due] = ledger.unrouted()
    assert (due.object_key, due.route_to, due.route_from, move_source(due)) == (
        "inbox/b.jpg",
        "sorted/Discs/b.jpg",
        None,
        "inbox/b.jpg",
    )
    ledger.engine.dispose()
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0006")
        assert "route_from" not in {column["name"] for column in inspect(connection).get_columns("results")}
        assert connection.execute(text("SELECT count(*) FROM results WHERE route_to IS NOT NULL")).scalar() == 2
    engine.dispose()


def test_revision_0008_adds_the_sort_level_and_old_results_stay_sorted_as_their_article_type(database_url):
    """A store at 0007 with an auto-sorted and a waiting result: upgraded, both are there with no level (an OK row
    of before was sorted to its article type, as the report reads it) and a new result records its level;
    downgraded again, the columns go and the rows stay."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0007")
        for name, status in (("a", "ok"), ("b", "needs_review")):
            connection.execute(
                text(
                    "INSERT INTO results (object_key, identity, model_version, size, last_modified, status,"
                    " category, probability, attempts, created_at)"
                    " VALUES (:key, 'e1', 'v1', 10, :moment, :status, 'Discs', 0.6, 1, :moment)"
                ),
                {"key": f"inbox/{name}.jpg", "moment": datetime(2026, 12, 5, 2, 0, tzinfo=UTC), "status": status},
            )
    engine.dispose()

    ledger = Ledger(database_url)

    assert revision_of(database_url) == head()
    old_ok, old_review = ledger.results()
    assert [(row.status, row.sort_level, row.sorted_as, row.offered) for row in (old_ok, old_review)] == [
        (OK, None, None, None),
        (NEEDS_REVIEW, None, None, None),
    ]
    assert [level_of(row) for row in (old_ok, old_review)] == ["article", "review"]
    new = [StoredObject(f"inbox/{name}.jpg", 5, datetime(2026, 12, 6, tzinfo=UTC), "e1") for name in "cd"]
    ledger.register(new)
    claimed = ledger.claim([row_id for row_id, _ in ledger.claimable()], "night-2", timedelta(minutes=5))
    offered = {"level": "sub", "path": ["Footwear", "Shoes"], "probability": 0.9, "categories": ["Casual Shoes"]}
    outcomes = {
        "inbox/c.jpg": Verdict(OK, category="Casual Shoes", sort_level="sub", sort_path=("Footwear", "Shoes")),
        "inbox/d.jpg": Verdict(NEEDS_REVIEW, category="Casual Shoes", offered=offered),
    }
    ledger.record([(row, outcomes[row.object_key]) for row in claimed], "night-2", 3)
    rows = {row.object_key: row for row in ledger.results()}
    sorted_up, waiting = rows["inbox/c.jpg"], rows["inbox/d.jpg"]
    assert (sorted_up.sort_level, sorted_up.sorted_as, level_of(sorted_up)) == ("sub", "Footwear/Shoes", "sub")
    assert (waiting.sort_level, waiting.sorted_as, waiting.offered) == (None, None, offered)
    ledger.engine.dispose()
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0007")
        columns = {column["name"] for column in inspect(connection).get_columns("results")}
        assert not columns & {"sort_level", "sorted_as", "offered"}
        assert connection.execute(text("SELECT count(*) FROM results")).scalar() == 4
    engine.dispose()


def test_revision_0009_lists_the_classes_results_hold_and_drops_full_listing(database_url):
    """A store at 0008 with answered, pending and decided results and a run that listed every partition: upgraded,
    the page's classes are the categories the results hold, a night adds its model's classes once (two runs
    adding the same ones included), and runs keep their rows without full_listing; downgraded again, the table
    goes, the column is back and the rows stay."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0008")
        for name, status, category in (("a", "ok", "Discs"), ("b", "needs_review", "Rings"), ("c", "pending", None)):
            connection.execute(
                text(
                    "INSERT INTO results (object_key, identity, model_version, size, last_modified, status,"
                    " category, attempts, created_at) VALUES (:key, 'e1', 'v1', 10, :moment, :status, :category, 1,"
                    " :moment)"
                ),
                {
                    "key": f"inbox/{name}.jpg",
                    "moment": datetime(2026, 12, 5, 2, 0, tzinfo=UTC),
                    "status": status,
                    "category": category,
                },
            )
        connection.execute(
            text(
                "INSERT INTO runs (run_id, shard, model_version, started_at, full_listing)"
                " VALUES ('night-1', '0/1', 'v1', :moment, :listed)"
            ),
            {"moment": datetime(2026, 12, 5, 2, 0, tzinfo=UTC), "listed": True},
        )
    engine.dispose()

    ledger = Ledger(database_url)

    assert revision_of(database_url) == head()

    def categories() -> list[str]:
        with ledger.engine.connect() as connection:
            return list(connection.scalars(text("SELECT name FROM categories ORDER BY name")))

    assert categories() == ["Discs", "Rings"]
    ledger.start_run("night-2-s0", "0/2", "v2", ["Boxes", "Discs"])
    ledger.start_run("night-2-s1", "1/2", "v2", ["Discs", "Boxes"])
    assert categories() == ["Boxes", "Discs", "Rings"]
    with ledger.engine.connect() as connection:
        assert "full_listing" not in {column["name"] for column in inspect(connection).get_columns("runs")}
        assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == 3
    ledger.engine.dispose()
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0008")
        assert not inspect(connection).has_table("categories")
        assert "full_listing" in {column["name"] for column in inspect(connection).get_columns("runs")}
        assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == 3
        assert connection.execute(text("SELECT count(*) FROM results")).scalar() == 3
    engine.dispose()
