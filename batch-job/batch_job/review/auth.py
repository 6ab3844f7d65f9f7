"""Who may review: reviewers and their Argon2 password hashes from a file (locally, or a
Kubernetes Secret mounted as a file), or the user an auth proxy vouches for in a header.

The users file holds one `name:hash` per line (`refund-batch review-passwd NAME` prints one);
blank lines and lines starting with # are ignored.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

CSRF_FIELD = "csrf"
log = logging.getLogger("refund-review")


def read_users(path: Path) -> dict[str, str]:
    hashes = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, hashed = line.partition(":")
        if not separator or not name or not hashed.startswith("$argon2"):
            raise ValueError(f"{path}:{number}: expected name:$argon2id$... (refund-batch review-passwd NAME)")
        hashes[name] = hashed
    return hashes


class Reviewers:
    """The users file, read again when it changes: an updated Kubernetes Secret (or an added line)
    takes effect without a restart, and a reviewer removed from it is logged out. A broken update (or a
    missing, unreadable file) keeps the reviewers read before, and is logged once (each change of it)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hasher = PasswordHasher()
        # Unknown names are checked against this too, so a wrong name takes as long as a wrong password.
        self.decoy = self.hasher.hash(secrets.token_urlsafe(16))
        self.hashes = read_users(path) if path else {}  # a broken file at start is an error
        self.stamp: int | None = path.stat().st_mtime_ns if path else None

    def refresh(self) -> None:
        if self.path is None:
            return
        try:
            stamp = self.path.stat().st_mtime_ns
        except OSError:
            if self.stamp is not None:  # once per breakage, not once per request
                self.keep_reviewers()
            self.stamp = None  # looked for again on every request: back with any stamp, it is read
            return
        if stamp == self.stamp:
            return
        self.stamp = stamp  # kept even if it cannot be read: read (and logged) again only once it changes
        try:
            self.hashes = read_users(self.path)
        except (OSError, ValueError):
            self.keep_reviewers()

    def keep_reviewers(self) -> None:
        log.exception("users file unreadable; keeping the reviewers read before", extra={"path": str(self.path)})

    def has(self, name: str) -> bool:
        self.refresh()
        return name in self.hashes

    def verify(self, name: str, password: str) -> bool:
        self.refresh()
        try:
            return self.hasher.verify(self.hashes.get(name, self.decoy), password) and name in self.hashes
        except (VerificationError, InvalidHashError):
            return False


def hash_line(name: str, password: str) -> str:
    if ":" in name or not name.strip() or name != name.strip():
        raise ValueError(f"{name!r}: a reviewer's name must be non-empty, without ':' or surrounding spaces")
    if not password:
        raise ValueError("the password is empty")
    return f"{name}:{PasswordHasher().hash(password)}"


def csrf_token(session: dict) -> str:
    """The session's CSRF token, made on first use; every form carries it back."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def csrf_valid(session: dict, submitted: object) -> bool:
    expected = session.get(CSRF_FIELD)
    return isinstance(submitted, str) and bool(expected) and secrets.compare_digest(expected, submitted)
