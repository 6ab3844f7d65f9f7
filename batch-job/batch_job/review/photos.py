"""Photos of items under review: thumbnails made once and kept in the store, and moving a
decided photo from review/ to sorted/<final category>/ (or unusable/)."""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from obstore.store import ObjectStore

from batch_job.ledger import Result
from batch_job.store import route_object
from batch_job.thumbnails import make_thumbnail
from common.objectstore import put_object, read_object

THUMBNAIL = (240, 320)
UNUSABLE_FOLDER = "unusable"


class UnsafeName(ValueError):
    """A class name that cannot be a folder in the store (it would escape or nest)."""


def folder_name(category: str) -> str:
    if not category or "/" in category or "\\" in category or category.startswith("."):
        raise UnsafeName(f"{category!r} cannot name a folder")
    return category


class Photos:
    def __init__(self, store: ObjectStore, inbox_prefix: str, route: str, thumbnails_prefix: str) -> None:
        self.store = store
        self.inbox = inbox_prefix.rstrip("/")
        self.route = route
        self.thumbnails = thumbnails_prefix.rstrip("/")

    def relative(self, row: Result) -> str:
        """The key below the inbox, as the nightly job's routing keeps it."""
        return str(PurePosixPath(row.object_key).relative_to(self.inbox))

    def review_key(self, row: Result) -> str:
        return f"review/{self.relative(row)}"

    def decided_key(self, row: Result, final_category: str | None) -> str:
        folder = f"sorted/{folder_name(final_category)}" if final_category is not None else UNUSABLE_FOLDER
        return f"{folder}/{self.relative(row)}"

    def thumbnail(self, row: Result) -> bytes:
        """The stored thumbnail, made from the photo wherever it is now on first request."""
        version = hashlib.sha256(f"{row.object_key}\n{row.identity}".encode()).hexdigest()
        key = f"{self.thumbnails}/{version}.jpg"
        try:
            return read_object(self.store, key)
        except FileNotFoundError:
            pass
        data = make_thumbnail(self.original(row), THUMBNAIL)
        put_object(self.store, key, data)
        return data

    def original(self, row: Result) -> bytes:
        """The photo itself, wherever routing has put it by now."""
        candidates = [row.object_key]
        if self.route != "none":
            candidates.insert(0, self.review_key(row))
            if row.reviewed_at is not None:
                candidates.append(self.decided_key(row, row.final_category))
        for key in candidates:
            try:
                return read_object(self.store, key)
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"no photo for {row.object_key} in the store")

    def route_decision(self, row: Result, final_category: str | None) -> str | None:
        """Move review/<key> to its decided folder; returns where it went (None: routing is off)."""
        if self.route == "none":
            return None
        destination = self.decided_key(row, final_category)
        route_object(self.store, self.review_key(row), destination, move=True)
        return destination
