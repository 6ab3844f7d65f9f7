"""A result's photo wherever routing put it: the photo itself (the night's report, the export, the review page),
thumbnails made once and kept in the store, and a decision's moves out of review/ and back (photos.layout)."""

from __future__ import annotations

import hashlib

from obstore.store import ObjectStore

from batch_job.ledger.routing import move_source
from batch_job.ledger.schema import Result
from batch_job.photos.layout import Layout
from batch_job.photos.objects import read_image, route_object
from batch_job.settings import Settings
from batch_job.thumbnails import make_thumbnail
from common.objectstore import put_object, read_object

THUMBNAIL = (240, 320)
WHOLE = (1600, 1600)  # the whole photo, scaled to fit a screen
THUMBNAILS_PREFIX = "thumbnails/"  # the review page's default (--thumbnails-prefix); only the page makes them


class Photos:
    def __init__(
        self,
        store: ObjectStore,
        inbox_prefix: str,
        route: str,
        thumbnails_prefix: str = THUMBNAILS_PREFIX,
        max_bytes: int = Settings.max_image_bytes,
    ) -> None:
        self.store = store
        self.layout = Layout(inbox_prefix)
        self.route = route
        self.thumbnails = thumbnails_prefix.rstrip("/")
        self.max_bytes = max_bytes

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

    def whole(self, row: Result) -> bytes:
        """The whole photo, scaled to fit a screen (made on request: it is looked at seldom)."""
        return make_thumbnail(self.original(row), WHOLE)

    def current_key(self, row: Result) -> str:
        """Where the photo is now: where the night (or a decision) routed it; while a move is due, where it
        starts (a decision's move out of review/ the page could not make, else the inbox); the inbox while
        routing is off; review/ for rows from before the routing state (revision 0003)."""
        if row.routed_at is not None:
            return row.route_to
        if row.route_to is None and self.route != "none":
            return self.layout.review_key(row.object_key)
        return move_source(row)

    def original(self, row: Result) -> bytes:
        """The photo itself, wherever routing has put it by now; ObjectTooLarge (read_image) before reading
        a photo bigger than the nightly job's --max-image-bytes."""
        candidates = [self.current_key(row), row.object_key]
        if self.route != "none":
            # A row from before the routing state, decided since.
            candidates.append(self.layout.review_key(row.object_key))
        for key in candidates:
            try:
                return read_image(self.store, key, self.max_bytes)
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"no photo for {row.object_key} in the store")

    def decision_route(self, row: Result, final_category: str | None) -> str | None:
        """Where a decided item's photo goes (None: routing is off)."""
        return None if self.route == "none" else self.layout.decided_key(row.object_key, final_category)

    def route_decision(self, decided: Result, destination: str) -> str:
        """Make the move a decision recorded (`decided`: its row as the decision's UPDATE returned it) to
        `destination`: out of review/, or (its nightly routing failed) from the inbox, copied or moved as the
        night routes. Returns where the photo came from."""
        source = self.current_key(decided)
        route_object(self.store, source, destination, move=source != decided.object_key or self.route == "move")
        return source

    def put_back(self, decided: Result) -> str | None:
        """An undone decision: the photo goes back to review/ from wherever the decision put it; returns
        where it is now (None: routing is off, nothing moved)."""
        if self.route == "none":
            return None
        source, destination = self.current_key(decided), self.layout.review_key(decided.object_key)
        if source != destination:
            move = source != decided.object_key or self.route == "move"
            route_object(self.store, source, destination, move=move)
        return destination
