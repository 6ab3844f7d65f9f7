"""Decided items as the night's report, the metrics and the export read them: the desk's figures, and taking
reviewed items for a dataset (an exported decision cannot be undone since)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, case, func, select, update
from sqlalchemy.orm import Session

from batch_job.ledger.schema import NEEDS_REVIEW, REVIEWED, Result, aware, utcnow


@dataclass(frozen=True)
class ReviewStats:
    queue_size: int
    oldest_waiting_seconds: float | None
    decisions_per_day: dict[date, int]
    # model top-1 -> (items whose reviewer agreed, items decided with a category)
    agreement: dict[str, tuple[int, int]]


def review_stats(engine: Engine, days: int = 7) -> ReviewStats:
    """Queue size, the oldest undecided item's age, the last `days` days' decisions, agreement."""
    now = utcnow()
    with Session(engine) as session:
        size, oldest = session.execute(
            select(func.count(), func.min(Result.finished_at)).where(Result.status == NEEDS_REVIEW)
        ).one()
        recent = session.scalars(select(Result.reviewed_at).where(Result.reviewed_at >= now - timedelta(days=days)))
        per_day = Counter(aware(moment).date() for moment in recent)
        agreement = session.execute(
            select(
                Result.category,
                func.sum(case((Result.category == Result.final_category, 1), else_=0)),
                func.count(),
            )
            .where(Result.status == REVIEWED)
            .group_by(Result.category)
        )
        return ReviewStats(
            size,
            (now - aware(oldest)).total_seconds() if oldest is not None else None,
            {now.date() - timedelta(days=back): per_day[now.date() - timedelta(days=back)] for back in range(days)},
            {category: (int(agreed), int(decided)) for category, agreed, decided in agreement},
        )


def take_for_export(engine: Engine, stamp: datetime) -> list[Result]:
    """Items a reviewer gave a category, oldest decision first (the export's stable order), each stamped
    exported (at `stamp`, unless an earlier export did): their decisions cannot be undone from now on.

    The stamp comes first and only stamped rows are read, so an undo either came before it (the item is
    not exported) or waits for it and is refused; a decision made meanwhile waits for the next export.
    """
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.execute(
            update(Result)
            .where(Result.status == REVIEWED, Result.exported_at.is_(None))
            .values(exported_at=stamp)
            .execution_options(synchronize_session=False)
        )
        query = (
            select(Result)
            .where(Result.status == REVIEWED, Result.exported_at.is_not(None))
            .order_by(Result.reviewed_at, Result.id)
        )
        return list(session.scalars(query))


def left_out_of_export(engine: Engine, row_ids: list[int], stamp: datetime) -> None:
    """Items the export stamped at `stamp` but could not write (no photo): their decisions were not exported."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(Result)
            .where(Result.id.in_(row_ids), Result.exported_at == stamp)
            .values(exported_at=None)
            .execution_options(synchronize_session=False)
        )
