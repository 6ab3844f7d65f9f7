"""The photo inbox in the object store: date-partitioned listing, placing new photos, routing.

The inbox is date-partitioned (inbox/YYYY-MM-DD/...), so a night lists only recent partitions
and its cost grows with new images, not history. Generic store access is in `common.objectstore`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import PurePosixPath

import obstore
from obstore.store import ObjectStore

from common.objectstore import StoredObject, list_objects, read_object, visible

DATE_PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def list_inbox(store: ObjectStore, prefix: str, since: date | None) -> Iterator[StoredObject]:
    """Loose files at the inbox's top, other folders, and date partitions from `since` on."""
    listing = obstore.list_with_delimiter(store, prefix.rstrip("/") or None)
    for meta in listing["objects"]:
        if visible(meta["path"]):
            yield StoredObject(meta["path"], meta["size"], meta["last_modified"], meta.get("e_tag"))
    for folder in sorted(listing["common_prefixes"]):
        name = PurePosixPath(folder).name
        if since is not None and DATE_PARTITION.match(name) and date.fromisoformat(name) < since:
            continue
        yield from list_objects(store, folder.rstrip("/") + "/")


def partition_of(key: str, prefix: str) -> date | None:
    first = PurePosixPath(key[len(prefix) :]).parts[0] if key.startswith(prefix) else ""
    return date.fromisoformat(first) if DATE_PARTITION.match(first) else None


def listing_start(newest_done: date | None, lookback_days: int) -> date | None:
    """Partitions before this were complete when the last run finished; late arrivals get `lookback_days`."""
    return newest_done - timedelta(days=lookback_days) if newest_done else None


def route_object(store: ObjectStore, key: str, destination: str, move: bool) -> None:
    obstore.copy(store, key, destination)
    if move:
        obstore.delete(store, key)


def inbox_key(prefix: str, day: date, name: str, data: bytes, store: ObjectStore) -> tuple[str, bool]:
    """Where a photo goes (inbox/YYYY-MM-DD/<name>), and whether that exact photo is already there.

    A different photo under a taken name gets a content-hash suffix; the same photo again is
    not stored twice (re-writing it would change its identity and classify it again).
    """
    folder = f"{prefix.rstrip('/')}/{day.isoformat()}"
    path = PurePosixPath(name)
    for key in (f"{folder}/{name}", f"{folder}/{path.stem}-{hashlib.sha256(data).hexdigest()[:8]}{path.suffix}"):
        try:
            if read_object(store, key) == data:
                return key, True
        except FileNotFoundError:
            return key, False
    return key, False
