"""The results store and ledger: exactly one result per object version.

SQLite by default, PostgreSQL in production; the same SQLAlchemy 2 code serves both.

Exactly once: every listed object version (key + identity) gets one row, whichever model answers it
(one INSERT ... ON CONFLICT DO NOTHING on that unique key, so runs registering at once add it once). A run claims
rows with one conditional UPDATE (pending and not leased by a live run), so two runs that
start together never send the same image; a claim is a lease, so the rows of a run killed
with -9 are taken over once it expires. Results are committed per batch, and only by the
run that holds the claim. A row records the model version that answered it; pending rows are
claimed whatever model is served now, so a model change strands nothing.

`attempts` counts answers for the image (a result, a rejection, TorchServe failing on it), never
claims: a run killed mid-flight or an outage leaves the count as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import islice
from pathlib import Path

from sqlalchemy import and_, create_engine, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from batch_job.ledger import migrate
from batch_job.ledger.schema import DEAD, FAILED, PENDING, Category, Result, Run, utcnow
from common.objectstore import StoredObject

CHUNK = 500  # rows per multi-row INSERT: 11 parameters each, well under every database's parameter limit
# A PostgreSQL B-tree entry holds about 2,700 bytes, and (object_key, identity) is one: a longer key could not be
# registered at all. S3 keys stop at 1,024 bytes; only a folder store's deep paths get near this.
MAX_KEY_BYTES = 2048
UNANSWERED = ""  # model_version (NOT NULL) of a row no model has answered yet
log = logging.getLogger("refund-batch")


@dataclass(frozen=True)
class Verdict:
    """What the night concluded for one object, as `record` stores it; status PENDING means "try again next run".

    `counts_as_attempt`: TorchServe answered for this image (a result, or a failure it may have
    caused); a PENDING verdict that counts dead-letters the image after `max_attempts`. A store
    hiccup or an unreachable server is not the image's fault and counts nothing.
    """

    status: str
    category: str | None = None
    probability: float | None = None
    top3: list | None = None
    model_name: str | None = None
    model_version: str | None = None
    error: str | None = None
    counts_as_attempt: bool = False
    latency_ms: float | None = None
    route_to: str | None = None
    sort_level: str | None = None  # OK: the level the rule sorted it to, sort_path the categories down to it
    sort_path: tuple[str, ...] | None = None
    offered: dict | None = None


class Ledger:
    def __init__(self, url: str, upgrade: bool = True) -> None:
        """upgrade=False: only check the schema is at head (migrate.SchemaBehind if not)."""
        options = {}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            options = {"connect_args": {"timeout": 60}}  # concurrent runs wait for SQLite's write lock
        self.engine = create_engine(url, **options)
        if upgrade:
            migrate.upgrade(self.engine)
        else:
            migrate.require_head(self.engine)
        insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        self._register_statement = (
            insert(Result).on_conflict_do_nothing(index_elements=["object_key", "identity"]).returning(Result.id)
        )
        self._category_statement = insert(Category).on_conflict_do_nothing(index_elements=["name"])

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, run_id: str, shard: str, model_version: str, classes: Iterable[str] = ()) -> None:
        """Record the run, and the served model's `classes` the review page offers (those not known yet)."""
        with Session(self.engine) as session, session.begin():
            session.add(Run(run_id=run_id, shard=shard, model_version=model_version, started_at=utcnow()))
            if names := sorted(set(classes)):
                # Another shard's run may add the same names at once: each is added by one of them.
                session.execute(self._category_statement, [{"name": name} for name in names])

    def finish_run(self, run_id: str, newest_partition: date | None, summary: dict) -> None:
        with Session(self.engine) as session, session.begin():
            run = session.get(Run, run_id)
            run.finished_at, run.newest_partition, run.summary = utcnow(), newest_partition, summary

    def recent_runs(self, limit: int, before: str) -> list[Run]:
        with Session(self.engine) as session:
            query = (
                select(Run)
                .where(Run.finished_at.is_not(None), Run.run_id < before)
                .order_by(Run.run_id.desc())
                .limit(limit)
            )
            return list(session.scalars(query))

    # -- claiming -------------------------------------------------------------------------

    def register(
        self, objects: Iterable[StoredObject], *, max_bytes: int | None = None, run_id: str | None = None
    ) -> int:
        """Add a row for each object version not seen before, whoever registered or answered it; returns how
        many rows this call added. Call it once per listing page: it holds one chunk at a time.

        An object bigger than `max_bytes` is added as failed by `run_id`, its size the reason: it is never
        claimed nor read. A key longer than MAX_KEY_BYTES is left out with a warning; the others register.
        """
        now = utcnow()
        added = 0
        remaining = iter(objects)
        while chunk := list(islice(remaining, CHUNK)):
            values = [_new_row(obj, now, max_bytes, run_id) for obj in chunk if _indexable(obj.key)]
            if not values:
                continue
            # The same order in every run: two runs inserting the same keys wait for each other, never deadlock.
            values.sort(key=lambda row: (row["object_key"], row["identity"]))
            with self.engine.begin() as connection:
                # Every night lists the whole inbox, so nearly every key is known: looking them up (the unique
                # index) costs less than inserting them, and a PostgreSQL insert that conflicts still burns a
                # value of the id sequence. ON CONFLICT stays for keys another run registers meanwhile.
                keys = [row["object_key"] for row in values]
                known = set(
                    connection.execute(select(Result.object_key, Result.identity).where(Result.object_key.in_(keys)))
                )
                values = [row for row in values if (row["object_key"], row["identity"]) not in known]
                if values:
                    # One statement compiled once (SQLAlchemy's "insertmanyvalues"); RETURNING counts the rows added.
                    added += len(connection.execute(self._register_statement, values).all())
        return added

    def claimable(self) -> list[tuple[int, str]]:
        """(id, key) of pending rows nobody holds a live lease on, whichever model they were registered under."""
        with Session(self.engine) as session:
            query = select(Result.id, Result.object_key).where(_claimable(utcnow())).order_by(Result.object_key)
            return [(row_id, key) for row_id, key in session.execute(query)]

    def claim(self, ids: list[int], run_id: str, lease: timedelta) -> list[Result]:
        """Atomically take those of `ids` still claimable; returns the rows this run now holds."""
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(Result)
                .where(Result.id.in_(ids), _claimable(now))
                .values(run_id=run_id, lease_until=now + lease, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Result).where(Result.id.in_(ids), Result.run_id == run_id, Result.status == PENDING)
            return list(session.scalars(query))

    def release(self, ids: list[int], run_id: str) -> None:
        """Give back claims this run holds and will not answer (a stopped night): claimable again at once,
        no attempt counted."""
        with Session(self.engine) as session, session.begin():
            for start in range(0, len(ids), CHUNK):
                session.execute(
                    update(Result)
                    .where(Result.id.in_(ids[start : start + CHUNK]), Result.run_id == run_id, Result.status == PENDING)
                    .values(lease_until=None)
                    .execution_options(synchronize_session=False)
                )

    def record(self, results: list[tuple[Result, Verdict]], run_id: str, max_attempts: int) -> list[Result]:
        """Store a batch of verdicts in one transaction, only for rows this run still holds; returns
        the rows whose verdict was committed (a row whose lease another run took over is not)."""
        if not results:
            return []
        now = utcnow()
        committed = []
        with Session(self.engine) as session, session.begin():
            for row, verdict in results:
                status, error = verdict.status, verdict.error
                attempts = row.attempts + int(verdict.counts_as_attempt)
                if status == PENDING and verdict.counts_as_attempt and attempts >= max_attempts:
                    status, error = DEAD, f"gave up after {attempts} attempts: {error}"
                changed = session.execute(
                    update(Result)
                    .where(Result.id == row.id, Result.run_id == run_id, Result.status == PENDING)
                    .values(
                        status=status,
                        category=verdict.category,
                        probability=verdict.probability,
                        top3=verdict.top3,
                        model_name=verdict.model_name,
                        model_version=verdict.model_version or Result.model_version,
                        error=error,
                        attempts=attempts,
                        latency_ms=verdict.latency_ms,
                        lease_until=None,
                        finished_at=now if status != PENDING else None,
                        route_to=verdict.route_to,
                        sort_level=verdict.sort_level,
                        sorted_as="/".join(verdict.sort_path) if verdict.sort_path else None,
                        offered=verdict.offered,
                    )
                    .execution_options(synchronize_session=False)
                )
                if changed.rowcount == 1:
                    committed.append(row)
        return committed

    def unrouted(self) -> list[Result]:
        """Committed results whose image is still to be copied or moved (a failed or interrupted routing)."""
        with Session(self.engine) as session:
            query = select(Result).where(Result.route_to.is_not(None), Result.routed_at.is_(None))
            return list(session.scalars(query.order_by(Result.object_key)))

    # -- reading --------------------------------------------------------------------------

    def results(self, run_id: str | None = None) -> list[Result]:
        with Session(self.engine) as session:
            query = select(Result).order_by(Result.object_key, Result.id)
            if run_id is not None:
                query = query.where(Result.run_id == run_id)
            return list(session.scalars(query))

    def count_rows(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Result)) or 0


def too_large(size: int, max_bytes: int) -> str:
    return f"object is {size} bytes, more than the {max_bytes} allowed"


def _indexable(key: str) -> bool:
    length = len(key.encode())
    if length > MAX_KEY_BYTES:
        log.warning(
            "key too long to record: not registered",
            extra={"key": key[:200], "bytes": length, "max_bytes": MAX_KEY_BYTES},
        )
    return length <= MAX_KEY_BYTES


def _new_row(obj: StoredObject, now: datetime, max_bytes: int | None, run_id: str | None) -> dict:
    """A pending row, or a failed one when the object is too big to read (every row has the same columns:
    one multi-row INSERT takes them all)."""
    too_big = max_bytes is not None and obj.size > max_bytes
    return {
        "object_key": obj.key,
        "identity": obj.identity,
        "model_version": UNANSWERED,
        "size": obj.size,
        "last_modified": obj.last_modified,
        "status": FAILED if too_big else PENDING,
        "error": too_large(obj.size, max_bytes) if too_big else None,
        "attempts": 0,
        "run_id": run_id if too_big else None,
        "created_at": now,
        "finished_at": now if too_big else None,
    }


def _claimable(now: datetime):
    return and_(
        Result.status == PENDING,
        or_(Result.lease_until.is_(None), Result.lease_until < now),
    )
