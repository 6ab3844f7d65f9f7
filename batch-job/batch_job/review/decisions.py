"""The review queue in the results store: what waits, who decided what, the nights.

A decision is one conditional UPDATE (still needs_review -> reviewed/unusable), so of two
reviewers deciding the same item at once exactly one wins; the other is told who was first.
The model's answer (category, probability, top3) stays untouched beside the final category.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, and_, case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from batch_job.ledger.schema import NEEDS_REVIEW, REVIEWED, UNUSABLE, Result, Run, utcnow

UNDO_WINDOW = timedelta(minutes=10)


def clock(moment: datetime | None) -> str | None:
    return f"{moment:%H:%M:%S}" if moment is not None else None


def night_of(run_id: str) -> date:
    """Runs are named by their UTC start (20261203T021500...Z-s0); a night is that date."""
    return datetime.strptime(run_id[:8], "%Y%m%d").date()


@dataclass(frozen=True)
class QueueFilter:
    night: date | None = None
    category: str | None = None
    after: int | None = None  # the page starts after this item in queue order (keyset paging)
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
    more: bool  # items wait after this page


def after(row: Result):
    """Items after `row` in queue order (newest night first, least sure first, then by id). Decided items
    leave the queue: paging by offset would skip as many items as were decided, paging by key skips none."""
    probability = func.coalesce(Result.probability, 0.0)
    mine = row.probability or 0.0
    return or_(
        Result.run_id < row.run_id,
        and_(Result.run_id == row.run_id, or_(probability > mine, and_(probability == mine, Result.id > row.id))),
    )


def count_waiting(session: Session, wanted: QueueFilter) -> int:
    return session.scalar(select(func.count()).select_from(Result).where(*wanted.conditions())) or 0


def waiting(engine: Engine, wanted: QueueFilter) -> int:
    with Session(engine) as session:
        return count_waiting(session, wanted)


def queue_page(engine: Engine, wanted: QueueFilter) -> QueuePage:
    """One page of undecided items, newest night first, and the nights and categories to filter by."""
    with Session(engine) as session:
        total = count_waiting(session, wanted)
        conditions = wanted.conditions()
        start = session.get(Result, wanted.after) if wanted.after is not None else None
        if start is not None:
            conditions.append(after(start))
        items = list(
            session.scalars(
                select(Result)
                .where(*conditions)
                .order_by(Result.run_id.desc(), func.coalesce(Result.probability, 0.0), Result.id)
                .limit(wanted.page_size + 1)
            )
        )
        nights = session.scalars(
            select(func.substr(Result.run_id, 1, 8)).where(Result.status == NEEDS_REVIEW).distinct()
        )
        categories = session.scalars(select(Result.category).where(Result.status == NEEDS_REVIEW).distinct())
        return QueuePage(
            items[: wanted.page_size],
            total,
            sorted({night_of(night) for night in nights}, reverse=True),
            sorted(category for category in categories if category),
            len(items) > wanted.page_size,
        )


def item(engine: Engine, row_id: int) -> Result | None:
    with Session(engine) as session:
        return session.get(Result, row_id)


@dataclass(frozen=True)
class ReviewWrite:
    """A decision or an undo as the results store took it. won: it was stored. Otherwise `row` shows who
    decided first (None: no such item)."""

    won: bool
    row: Result | None


def decide(
    engine: Engine,
    row_id: int,
    reviewer: str,
    final_category: str | None,
    destination: str | None = None,
    unrouted_place: str | None = None,
) -> ReviewWrite:
    """Store a reviewer's decision unless someone decided the item first; None means unusable.

    `destination` (routing on): the same UPDATE records the photo's move there as due (routed_at NULL), from
    where the photo is as the UPDATE finds the row: where the night's routing put it once that is recorded,
    else where the move due starts (the inbox, its nightly routing failed or not recorded yet);
    `unrouted_place` for a row no routing was ever recorded for (from before revision 0003). The app moves
    the photo from the won row's move source; should that fail, the night's routing makes the move.
    A won decision's row is the row as the UPDATE left it (RETURNING), not as read before it.
    """
    routing = {}
    if destination:
        place = case(
            (Result.routed_at.is_not(None), Result.route_to),
            (Result.route_to.is_(None), unrouted_place),
            else_=Result.route_from,
        )
        routing = {"route_from": place, "route_to": destination, "routed_at": None}
    with Session(engine, expire_on_commit=False) as session, session.begin():
        decided = session.scalars(
            update(Result)
            .where(Result.id == row_id, Result.status == NEEDS_REVIEW)
            .values(
                status=REVIEWED if final_category is not None else UNUSABLE,
                final_category=final_category,
                reviewed_by=reviewer,
                reviewed_at=utcnow(),
                **routing,
            )
            .returning(Result),
            execution_options={"synchronize_session": False},
        ).one_or_none()
    return ReviewWrite(True, decided) if decided is not None else ReviewWrite(False, item(engine, row_id))


def undo(
    engine: Engine, row_id: int, reviewer: str, put_back: Callable[[Result], str | None], routing: bool
) -> ReviewWrite:
    """Take back `reviewer`'s own decision: the item waits for review again, as before it.

    Only within UNDO_WINDOW, before any night started after the decision (it may have routed it) and
    before an export took it (the dataset carries its label). One conditional UPDATE, like a decision, so
    a second undo or another reviewer's undo loses; `put_back` moves the photo back to review/ (returning
    where it is now, None: routing is off) inside the same transaction, so a failed move leaves the
    decision standing. `routing`: the decision moved its photo, after its commit (`ledger.mark_routed`).
    """
    now = utcnow()
    later_night = exists().where(Run.started_at > Result.reviewed_at)
    conditions = [
        Result.id == row_id,
        Result.status.in_((REVIEWED, UNUSABLE)),
        Result.reviewed_by == reviewer,
        Result.reviewed_at > now - UNDO_WINDOW,
        Result.exported_at.is_(None),
        ~later_night,
    ]
    if routing:
        # Until the decision's own move is recorded, where its photo is cannot be known: refuse, like a race.
        conditions.append(Result.routed_at >= Result.reviewed_at)
    with Session(engine) as session, session.begin():
        # RETURNING: the row as this UPDATE found it under its lock, not as read before it.
        undone = session.scalars(
            update(Result)
            .where(*conditions)
            .values(status=NEEDS_REVIEW, final_category=None, reviewed_by=None, reviewed_at=None)
            .returning(Result),
            execution_options={"synchronize_session": False},
        ).one_or_none()
        if undone is not None:
            place = put_back(undone)
            if place is not None:
                session.execute(update(Result).where(Result.id == row_id).values(route_to=place, routed_at=now))
    return ReviewWrite(undone is not None, item(engine, row_id))


def decided_today(engine: Engine) -> dict[str, int]:
    """Decisions since midnight UTC, per reviewer."""
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    with Session(engine) as session:
        rows = session.execute(
            select(Result.reviewed_by, func.count())
            .where(Result.reviewed_at >= midnight, Result.reviewed_by.is_not(None))
            .group_by(Result.reviewed_by)
        )
        return dict(sorted((name, count) for name, count in rows))


def nights(engine: Engine, limit: int = 60) -> list[Run]:
    """The newest runs, newest first (one per shard and night)."""
    with Session(engine) as session:
        return list(session.scalars(select(Run).order_by(Run.run_id.desc()).limit(limit)))


def run(engine: Engine, run_id: str) -> Run | None:
    with Session(engine) as session:
        return session.get(Run, run_id)
