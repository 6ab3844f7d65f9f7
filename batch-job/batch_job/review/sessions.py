"""Review sessions kept in the results store (revision 0004): the signed cookie only carries a random
token, and a session lives while its row does, so logging out ends it for every copy of the cookie."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Engine, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from batch_job.ledger.schema import Base, utcnow

LIFETIME = timedelta(hours=12)


class ReviewSession(Base):
    __tablename__ = "review_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie's token
    reviewer: Mapped[str] = mapped_column(String(128), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def digest(token: str) -> str:
    # Only the digest is stored: whoever reads the database cannot use a live session.
    return hashlib.sha256(token.encode()).hexdigest()


def start(engine: Engine, reviewer: str) -> str:
    """A new session for `reviewer`; returns the token for the cookie. Ended sessions are swept here."""
    token, now = secrets.token_urlsafe(32), utcnow()
    with Session(engine) as session, session.begin():
        session.execute(delete(ReviewSession).where(ReviewSession.expires_at < now))
        session.add(ReviewSession(digest=digest(token), reviewer=reviewer, started_at=now, expires_at=now + LIFETIME))
    return token


def reviewer_of(engine: Engine, token: object) -> str | None:
    """The reviewer whose live session the token is; None for an ended, expired or unknown one."""
    if not isinstance(token, str):
        return None
    with Session(engine) as session:
        query = select(ReviewSession.reviewer).where(
            ReviewSession.digest == digest(token), ReviewSession.expires_at > utcnow()
        )
        return session.scalar(query)


def end(engine: Engine, token: object) -> None:
    if isinstance(token, str):
        with Session(engine) as session, session.begin():
            session.execute(delete(ReviewSession).where(ReviewSession.digest == digest(token)))
