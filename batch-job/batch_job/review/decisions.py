"""The review queue in the results store: what waits, who decided what, and how the decisions went.

A decision is one conditional UPDATE (still needs_review -> reviewed/unusable), so of two
reviewers deciding the same item at once exactly one wins; the other is told who was first.
The model's answer (category, probability, top3) stays untouched beside the final category.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, and_, case, func, select, update
from sqlalchemy.orm import Session

from batch_job.ledger import NEEDS_REVIEW, REVIEWED, UNUSABLE, Result, aware, utcnow


def night_of(run_id: str) -> date:
    """Runs are named by their UTC start (20261203T021500...Z-s0); a night is that date."""
    return datetime.strptime(run_id[:8], "%Y%m%d").date()


@dataclass(frozen=True)
class QueueFilter:
    night: date | None = None
    category: str | None = None
    page: int = 1
    page_size: int = 50

    def conditions(self) -> list:
        found = [Result.status == NEEDS_REVIEW]
        if self.night is not None:
            found.append(Result.run_id.like(self.night.strftime("%Y%m%d") + "%"))
        if self.category:
            found.append(Result.category == self.category)
        return found


@dataclass(frozen=True)
class QueuePage:
    items: list[Result]
    total: int
    nights: list[date]
    categories: list[str]

    def pages(self, page_size: int) -> int:
        return max(1, -(-self.total // page_size))


def queue_page(engine: Engine, wanted: QueueFilter) -> QueuePage:
    """One page of undecided items, newest night first, and the nights and categories to filter by."""
    with Session(engine) as session:
        conditions = wanted.conditions()
        total = session.scalar(select(func.count()).select_from(Result).where(*conditions)) or 0
        items = session.scalars(
            select(Result)
            .where(*conditions)
            .order_by(Result.run_id.desc(), Result.probability, Result.id)
            .offset((wanted.page - 1) * wanted.page_size)
            .limit(wanted.page_size)
        )
        nights = session.scalars(
            select(func.substr(Result.run_id, 1, 8)).where(Result.status == NEEDS_REVIEW).distinct()
        )
        categories = session.scalars(select(Result.category).where(Result.status == NEEDS_REVIEW).distinct())
        return QueuePage(
            list(items),
            total,
            sorted({night_of(night) for night in nights}, reverse=True),
            sorted(category for category in categories if category),
        )


def item(engine: Engine, row_id: int) -> Result | None:
    with Session(engine) as session:
        return session.get(Result, row_id)


@dataclass(frozen=True)
class Outcome:
    """won: this decision was stored. Otherwise `row` shows who decided first (None: no such item)."""

    won: bool
    row: Result | None


def decide(
    engine: Engine, row_id: int, reviewer: str, final_category: str | None, destination: str | None = None
) -> Outcome:
    """Store a reviewer's decision unless someone decided the item first; None means unusable.

    `destination` (routing on) replaces the route of a row whose nightly routing has not happened
    yet (it failed): should the decision's own move fail too, the night's routing retry takes the
    photo from the inbox straight there, never into review/.
    """
    pending = and_(Result.routed_at.is_(None), Result.route_to.is_not(None))
    routing = {"route_to": case((pending, destination), else_=Result.route_to)} if destination else {}
    with Session(engine) as session, session.begin():
        won = session.execute(
            update(Result)
            .where(Result.id == row_id, Result.status == NEEDS_REVIEW)
            .values(
                status=REVIEWED if final_category is not None else UNUSABLE,
                final_category=final_category,
                reviewed_by=reviewer,
                reviewed_at=utcnow(),
                **routing,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
    return Outcome(bool(won), item(engine, row_id))


def routed(engine: Engine, row_id: int, destination: str) -> None:
    """The decided photo is at `destination` now."""
    with Session(engine) as session, session.begin():
        session.execute(update(Result).where(Result.id == row_id).values(route_to=destination, routed_at=utcnow()))


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


def reviewed(engine: Engine) -> list[Result]:
    """Items a reviewer gave a category, oldest decision first (the export's stable order)."""
    with Session(engine) as session:
        query = select(Result).where(Result.status == REVIEWED).order_by(Result.reviewed_at, Result.id)
        return list(session.scalars(query))
