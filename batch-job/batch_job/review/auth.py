"""Who may review: reviewers and their Argon2 password hashes from a file (locally, or a
Kubernetes Secret mounted as a file), or the user an auth proxy vouches for in a header.

The users file holds one `name:hash` per line (`refund-batch review-passwd NAME` prints one);
blank lines and lines starting with # are ignored.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

CSRF_FIELD = "csrf"


class Reviewers:
    def __init__(self, hashes: dict[str, str]) -> None:
        self.hashes = hashes
        self.hasher = PasswordHasher()
        # Unknown names are checked against this too, so a wrong name takes as long as a wrong password.
        self.decoy = self.hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def from_file(cls, path: Path) -> Reviewers:
        hashes = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, separator, hashed = line.partition(":")
            if not separator or not name or not hashed.startswith("$argon2"):
                raise ValueError(f"{path}:{number}: expected name:$argon2id$... (refund-batch review-passwd NAME)")
            hashes[name] = hashed
        return cls(hashes)

    def verify(self, name: str, password: str) -> bool:
        try:
            return self.hasher.verify(self.hashes.get(name, self.decoy), password) and name in self.hashes
        except (VerificationError, InvalidHashError):
            return False


def hash_line(name: str, password: str) -> str:
    if ":" in name or not name.strip():
        raise ValueError("a reviewer's name must be non-empty and contain no ':'")
    return f"{name}:{PasswordHasher().hash(password)}"


def csrf_token(session: dict) -> str:
    """The session's CSRF token, made on first use; every form carries it back."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def csrf_valid(session: dict, submitted: object) -> bool:
    expected = session.get(CSRF_FIELD)
    return isinstance(submitted, str) and bool(expected) and secrets.compare_digest(expected, submitted)
