"""The results store and ledger: one row per object version, so nothing is done twice.

SQLite by default, PostgreSQL in production; the same SQLAlchemy 2 code serves both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, UniqueConstraint, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from batch_job.store import StoredObject

PENDING, OK, NEEDS_REVIEW, FAILED = "pending", "ok", "needs_review", "failed"
FINAL = (OK, NEEDS_REVIEW, FAILED)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("object_key", "identity", name="uq_results_object_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    object_key: Mapped[str] = mapped_column(String(1024))
    identity: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(Integer)
    last_modified: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), index=True)
    category: Mapped[str | None] = mapped_column(String(128))
    probability: Mapped[float | None] = mapped_column(Float)
    top3: Mapped[list | None] = mapped_column(JSON)
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Outcome:
    """What happened to one object in this run; status PENDING means "try again next run"."""

    status: str
    category: str | None = None
    probability: float | None = None
    top3: list | None = None
    model_name: str | None = None
    model_version: str | None = None
    error: str | None = None


class Ledger:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url)
        Base.metadata.create_all(self.engine)

    def pending_work(self, objects: Iterable[StoredObject]) -> list[StoredObject]:
        """The objects without a final result: new ones and those left pending by an earlier run."""
        finished = set()
        with Session(self.engine) as session:
            rows = session.execute(select(Result.object_key, Result.identity).where(Result.status.in_(FINAL)))
            finished = {(key, identity) for key, identity in rows}
        return [obj for obj in objects if (obj.key, obj.identity) not in finished]

    def claim(self, objects: list[StoredObject], run_id: str) -> None:
        """Record each object as pending under this run before it is sent."""
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            existing = {
                (row.object_key, row.identity): row
                for row in session.scalars(select(Result).where(Result.status == PENDING))
            }
            for obj in objects:
                row = existing.get((obj.key, obj.identity))
                if row is None:
                    row = Result(
                        object_key=obj.key,
                        identity=obj.identity,
                        size=obj.size,
                        last_modified=obj.last_modified,
                        status=PENDING,
                        attempts=0,
                    )
                    session.add(row)
                row.run_id, row.claimed_at = run_id, now

    def record(self, results: list[tuple[StoredObject, Outcome]], run_id: str) -> None:
        """Store a batch of outcomes in one transaction."""
        if not results:
            return
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            for obj, outcome in results:
                row = session.scalars(
                    select(Result).where(Result.object_key == obj.key, Result.identity == obj.identity)
                ).one()
                row.status, row.category, row.probability, row.top3 = (
                    outcome.status,
                    outcome.category,
                    outcome.probability,
                    outcome.top3,
                )
                row.model_name, row.model_version, row.error = outcome.model_name, outcome.model_version, outcome.error
                row.attempts += 1
                row.run_id = run_id
                row.finished_at = now if outcome.status != PENDING else None

    def results(self, run_id: str | None = None) -> list[Result]:
        with Session(self.engine) as session:
            query = select(Result).order_by(Result.object_key)
            if run_id is not None:
                query = query.where(Result.run_id == run_id)
            return list(session.scalars(query))

    def count_rows(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Result)) or 0
