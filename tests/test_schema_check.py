"""Who migrates the results store: `refund-batch migrate` (the chart's pre-install/pre-upgrade hook) for a server
database, which the apps only check; an SQLite file is the app's own and is upgraded at start, so a new user's
`refund-batch run` on a fresh file just works. The real CLI in its own process, a real PostgreSQL 15."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from batch_job.ledger import migrate
from sqlalchemy import create_engine

from tests.ports import distinct_free_ports
from tests.review_support import users_file
from tests.test_migrations import head, revision_of

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def at_revision(database_url: str, revision: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), revision)
    engine.dispose()


def refund_batch(tmp_path: Path, database_url: str, *arguments: str) -> subprocess.CompletedProcess:
    """The CLI as the chart runs it: settings from REFUND_* variables; TorchServe listens nowhere, so a `run`
    that gets past the results store exits 2 (TorchServe unreachable)."""
    torchserve, review, review_metrics = distinct_free_ports(3)
    env = {
        **os.environ,
        "REFUND_DATABASE_URL": database_url,
        "REFUND_STORE": str(tmp_path / "store"),
        "REFUND_TORCHSERVE_URL": f"http://127.0.0.1:{torchserve}",
        "REFUND_RETRIES": "0",
        "REFUND_REVIEW_USERS_FILE": str(users_file(tmp_path)),
        "REFUND_REVIEW_PORT": str(review),
        "REFUND_REVIEW_METRICS_PORT": str(review_metrics),
    }
    return subprocess.run(
        [sys.executable, "-m", "batch_job", *arguments],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_apps_refuse_a_server_database_behind_head_and_name_the_command_that_fixes_it(postgres_url, tmp_path):
    at_revision(postgres_url, migrate.BASELINE)
    for arguments in (["run"], ["review"], ["report"]):
        refused = refund_batch(tmp_path, postgres_url, *arguments)
        assert refused.returncode == 4, (arguments, refused.stderr)
        assert f"at revision {migrate.BASELINE}" in refused.stderr and f"needs {head()}" in refused.stderr
        assert "run `refund-batch migrate`" in refused.stderr, refused.stderr
    assert revision_of(postgres_url) == migrate.BASELINE, "an app that only checks changed nothing"

    assert refund_batch(tmp_path, postgres_url, "migrate").returncode == 0  # what the Helm hook runs
    assert refund_batch(tmp_path, postgres_url, "run").returncode == 2, "past the check: TorchServe is what is missing"


def test_an_empty_server_database_is_refused_too_and_migrate_flag_upgrades_it(postgres_url, tmp_path):
    refused = refund_batch(tmp_path, postgres_url, "run")
    assert refused.returncode == 4 and "empty" in refused.stderr, refused.stderr
    assert refund_batch(tmp_path, postgres_url, "run", "--migrate").returncode == 2
    assert revision_of(postgres_url) == head()


def test_an_sqlite_file_is_upgraded_at_start_new_or_behind(tmp_path):
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert refund_batch(tmp_path, fresh, "report").returncode == 0
    assert refund_batch(tmp_path, fresh, "run").returncode == 2
    assert revision_of(fresh) == head()
    behind = f"sqlite:///{tmp_path / 'behind.db'}"
    at_revision(behind, migrate.BASELINE)
    assert refund_batch(tmp_path, behind, "run").returncode == 2
    assert revision_of(behind) == head()
