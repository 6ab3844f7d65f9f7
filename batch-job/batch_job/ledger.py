"""The results store and ledger: exactly one result per object version.

SQLite by default, PostgreSQL in production; the same SQLAlchemy 2 code serves both.

Exactly once: every listed object gets a `pending` row (insert-if-absent). A run claims
rows with one conditional UPDATE (pending and not leased by a live run), so two runs that
start together never send the same image; a claim is a lease, so the rows of a run killed
with -9 are taken over once it expires. Results are committed per batch, and only by the
run that holds the claim. A row records the model version that answered it; pending rows are
claimed whatever model is served now, so a model change strands nothing.

`attempts` counts answers for the image (a result, a rejection, TorchServe failing on it), never
claims: a run killed mid-flight or an outage leaves the count as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from batch_job import migrate
from common.objectstore import StoredObject

PENDING, OK, NEEDS_REVIEW, FAILED, DEAD = "pending", "ok", "needs_review", "failed", "dead"
REVIEWED, UNUSABLE = "reviewed", "unusable"  # a reviewer's decision on a needs_review item (batch_job.review)
FINAL = (OK, NEEDS_REVIEW, FAILED, DEAD, REVIEWED, UNUSABLE)
STATUSES = (PENDING, *FINAL)  # every status a results row can hold
CHUNK = 500  # keys per IN (...) clause: well under every database's parameter limit
# model_version is NOT NULL and part of the unique key (revision 0001): a row no model has answered
# yet holds "", so two runs registering one object version at once collide on the key.
UNANSWERED = ""


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored here is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Base(DeclarativeBase):
    pass


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("object_key", "identity", "model_version", name="uq_results_object_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    object_key: Mapped[str] = mapped_column(String(1024), index=True)
    identity: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    last_modified: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), index=True)
    category: Mapped[str | None] = mapped_column(String(128))
    probability: Mapped[float | None] = mapped_column(Float)
    top3: Mapped[list | None] = mapped_column(JSON)
    model_name: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    # Routing (revision 0003): where the committed result sends the image, and when that was done.
    route_to: Mapped[str | None] = mapped_column(String(1024))
    routed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The review page's decision (revision 0002); category/probability/top3 keep the model's answer.
    final_category: Mapped[str | None] = mapped_column(String(128))
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # Revision 0005: when export-labels first wrote this decision into a dataset (it cannot be undone since).
    exported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Run(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    newest_partition: Mapped[date | None] = mapped_column(Date)
    # Revision 0003: this run listed every partition, not only those since the watermark.
    full_listing: Mapped[bool | None] = mapped_column(Boolean)
    summary: Mapped[dict | None] = mapped_column(JSON)


@dataclass(frozen=True)
class Outcome:
    """What happened to one object in this run; status PENDING means "try again next run".

    `counts_as_attempt`: TorchServe answered for this image (a result, or a failure it may have
    caused); a PENDING outcome that counts dead-letters the image after `max_attempts`. A store
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


class Ledger:
    def __init__(self, url: str) -> None:
        options = {}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            options = {"connect_args": {"timeout": 60}}  # concurrent runs wait for SQLite's write lock
        self.engine = create_engine(url, **options)
        migrate.upgrade(self.engine)
        self._insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, run_id: str, shard: str, model_version: str, full_listing: bool = False) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                Run(
                    run_id=run_id,
                    shard=shard,
                    model_version=model_version,
                    started_at=utcnow(),
                    full_listing=full_listing,
                )
            )

    def finish_run(self, run_id: str, newest_partition: date | None, summary: dict) -> None:
        with Session(self.engine) as session, session.begin():
            run = session.get(Run, run_id)
            run.finished_at, run.newest_partition, run.summary = utcnow(), newest_partition, summary

    def newest_finished_partition(self, shard: str) -> date | None:
        """The watermark: the newest inbox partition up to today a finished run of this shard has listed."""
        with Session(self.engine) as session:
            query = select(func.max(Run.newest_partition)).where(
                Run.shard == shard,
                Run.finished_at.is_not(None),
                Run.newest_partition <= utcnow().date(),  # a future date (stored by earlier code) is no watermark
            )
            return session.scalar(query)

    def last_full_listing(self, shard: str) -> datetime | None:
        """When the newest finished run of this shard that listed every partition started."""
        with Session(self.engine) as session:
            query = select(func.max(Run.started_at)).where(
                Run.shard == shard, Run.finished_at.is_not(None), Run.full_listing.is_(True)
            )
            return aware(session.scalar(query))

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

    def register(self, objects: Iterable[StoredObject]) -> int:
        """Add a pending row for each object version not seen before (under any model); returns how many
        were new."""
        objects = list(objects)
        known: set[tuple[str, str]] = set()
        with Session(self.engine) as session:
            for start in range(0, len(objects), CHUNK):
                keys = [obj.key for obj in objects[start : start + CHUNK]]
                rows = session.execute(select(Result.object_key, Result.identity).where(Result.object_key.in_(keys)))
                known.update((key, identity) for key, identity in rows)
        new = [obj for obj in objects if (obj.key, obj.identity) not in known]
        now = utcnow()
        with self.engine.begin() as connection:
            for start in range(0, len(new), CHUNK):
                values = [
                    {
                        "object_key": obj.key,
                        "identity": obj.identity,
                        "model_version": UNANSWERED,
                        "size": obj.size,
                        "last_modified": obj.last_modified,
                        "status": PENDING,
                        "attempts": 0,
                        "created_at": now,
                    }
                    for obj in new[start : start + CHUNK]
                ]
                statement = self._insert(Result).values(values)
                connection.execute(
                    statement.on_conflict_do_nothing(index_elements=["object_key", "identity", "model_version"])
                )
        return len(new)

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

    def record(self, results: list[tuple[Result, Outcome]], run_id: str, max_attempts: int) -> list[Result]:
        """Store a batch of outcomes in one transaction, only for rows this run still holds; returns
        the rows whose outcome was committed (a row whose lease another run took over is not)."""
        if not results:
            return []
        now = utcnow()
        committed = []
        with Session(self.engine) as session, session.begin():
            for row, outcome in results:
                status, error = outcome.status, outcome.error
                attempts = row.attempts + int(outcome.counts_as_attempt)
                if status == PENDING and outcome.counts_as_attempt and attempts >= max_attempts:
                    status, error = DEAD, f"gave up after {attempts} attempts: {error}"
                changed = session.execute(
                    update(Result)
                    .where(Result.id == row.id, Result.run_id == run_id, Result.status == PENDING)
                    .values(
                        status=status,
                        category=outcome.category,
                        probability=outcome.probability,
                        top3=outcome.top3,
                        model_name=outcome.model_name,
                        model_version=outcome.model_version or Result.model_version,
                        error=error,
                        attempts=attempts,
                        latency_ms=outcome.latency_ms,
                        lease_until=None,
                        finished_at=now if status != PENDING else None,
                        route_to=outcome.route_to,
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

    def mark_routed(self, row_id: int) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(Result).where(Result.id == row_id).values(routed_at=utcnow()))

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


def _claimable(now: datetime):
    return and_(
        Result.status == PENDING,
        or_(Result.lease_until.is_(None), Result.lease_until < now),
    )
