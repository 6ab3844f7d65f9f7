"""The results store's schema under Alembic: `upgrade` brings any database to the newest revision.

`refund-batch migrate` runs it (the Helm chart's pre-install/pre-upgrade hook); the apps run it at start only
on an SQLite file or when asked (--migrate), and otherwise `require_head` refuses a schema behind. Shards of
an Indexed Job open the store together, so an upgrade holds a lock: PostgreSQL's advisory lock inside the
(transactional) migration, an exclusive file lock beside an SQLite file. Whoever waits finds the schema at head.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text

BASELINE = "0001"  # the schema `create_all` made before Alembic; such databases are stamped, not re-created
ADVISORY_LOCK_KEY = 0x72656675  # any constant shared by every process of the job ("refu")
log = logging.getLogger("refund-batch")


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "batch_job.ledger:migrations")
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with Path(f"{database}.migrate-lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


class SchemaBehind(RuntimeError):
    """The results store is at an older revision than this version of the code needs."""


def require_head(engine: Engine) -> None:
    """Raise SchemaBehind unless the schema is at this version's head. A revision this version does not know
    is a newer one (a rollback of the image after an upgrade): migrations only add, so it is used, with a warning."""
    with engine.connect() as connection:
        current = current_revision(connection)
        script = ScriptDirectory.from_config(alembic_config(connection))
    head = script.get_current_head()
    if current == head:
        return
    try:
        script.get_revision(current)
    except CommandError:  # alembic's answer to a revision it has no script for
        log.warning("results store at a newer revision than this version knows", extra={"revision": current})
        return
    raise SchemaBehind(
        f"the results store is at revision {current or 'none (an empty database)'}, this version needs {head}: "
        "run `refund-batch migrate` with this version first (the Helm chart's pre-install/pre-upgrade hook does), "
        "or pass --migrate (REFUND_MIGRATE=1) to upgrade it at start"
    )


def upgrade(engine: Engine) -> str | None:
    """Migrate to head; returns the revision the database was at before (None: it was new)."""
    lock = _sqlite_file_lock(engine) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    with lock, engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        config = alembic_config(connection)
        before = current_revision(connection)
        if before is None and inspect(connection).has_table("results"):
            command.stamp(config, BASELINE)
            before = BASELINE
        command.upgrade(config, "head")
        after = current_revision(connection)
    if after != before:
        log.info("results store migrated", extra={"from_revision": before, "to_revision": after})
    return before
