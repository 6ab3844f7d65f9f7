"""Routing state in the ledger, written by the night and the review page alike: where a photo is while its move
is due, and recording a move once it is made."""

from __future__ import annotations

from sqlalchemy import Engine, case, func, update

from batch_job.ledger.schema import Result, utcnow


def move_source(row: Result) -> str:
    """Where the photo is while its move is due (route_to set, routed_at not): a decision's photo leaves review/."""
    return row.route_from or row.object_key


def mark_routed(engine: Engine, row_id: int, moved_from: str, moved_to: str) -> bool:
    """Record that the photo of a row was copied or moved from `moved_from` to `moved_to`; True if that was the
    move due, so the row now says where the photo is.

    One conditional UPDATE, on the row as it is when the move is done, not as it was read before: a decision
    committed meanwhile (the night was moving the photo into review/) changed the destination, so the row is
    not marked routed but records that the move due starts at `moved_to` now, for whoever routes it next.
    """
    done = Result.route_to == moved_to
    with engine.begin() as connection:
        stamped = connection.execute(
            update(Result)
            .where(
                Result.id == row_id,
                Result.routed_at.is_(None),
                func.coalesce(Result.route_from, Result.object_key) == moved_from,
            )
            .values(routed_at=case((done, utcnow()), else_=None), route_from=case((done, None), else_=moved_to))
            .returning(Result.routed_at)
        ).one_or_none()
    return stamped is not None and stamped.routed_at is not None
