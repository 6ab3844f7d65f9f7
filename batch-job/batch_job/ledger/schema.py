"""The results store's tables: one row per object version (results), one per run and shard (runs), and the
model's classes the review page offers (categories). The revisions in migrations/ build them."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import JSON, BigInteger, Date, DateTime, Float, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PENDING, OK, NEEDS_REVIEW, FAILED, DEAD = "pending", "ok", "needs_review", "failed", "dead"
REVIEWED, UNUSABLE = "reviewed", "unusable"  # a reviewer's decision on a needs_review item (batch_job.review)
FINAL = (OK, NEEDS_REVIEW, FAILED, DEAD, REVIEWED, UNUSABLE)
STATUSES = (PENDING, *FINAL)  # every status a results row can hold
# Revision 0006: the rows every night's routing retry reads (unrouted()), as a partial index. Pending rows
# (claimable()) and the review queue are found through ix_results_status.
UNROUTED_ROWS = text("route_to IS NOT NULL AND routed_at IS NULL")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored here is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Base(DeclarativeBase):
    pass


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (
        # One row per object version, whichever model answers it (revision 0006). It leads with object_key,
        # so it also serves lookups by key.
        UniqueConstraint("object_key", "identity", name="uq_results_object_version"),
        Index("ix_results_unrouted", "object_key", postgresql_where=UNROUTED_ROWS, sqlite_where=UNROUTED_ROWS),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Text (revision 0006): keys and routes have no length limit of their own; MAX_KEY_BYTES guards the index.
    object_key: Mapped[str] = mapped_column(Text)
    identity: Mapped[str] = mapped_column(String(256))
    model_version: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)  # objects of 2 GiB and more (revision 0006)
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
    route_to: Mapped[str | None] = mapped_column(Text)
    routed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Revision 0007: where the photo is while its move is due; None: the inbox (object_key).
    route_from: Mapped[str | None] = mapped_column(Text)
    # Revision 0008: the level an OK result was sorted to (article, sub, master) and its category path joined
    # by "/" (Footwear/Shoes); NULL on OK rows of before: the article type (category). A needs_review result's
    # `offered`: the upper-level group the model is surest of, which the review page offers first.
    sort_level: Mapped[str | None] = mapped_column(String(16))
    sorted_as: Mapped[str | None] = mapped_column(Text)
    offered: Mapped[dict | None] = mapped_column(JSON)
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
    summary: Mapped[dict | None] = mapped_column(JSON)


class Category(Base):
    """A class a model served by a night can answer (revision 0009): the review page lists these, so a class no
    result has yet is offered too and the page never scans the results for them."""

    __tablename__ = "categories"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
