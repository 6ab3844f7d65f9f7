"""The object store holding the photos: a local folder by default, S3 in production.

obstore gives one API over both. The inbox is date-partitioned (inbox/YYYY-MM-DD/...), so
a night lists only recent partitions and its cost grows with new images, not history.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath

import obstore
from obstore.store import LocalStore, ObjectStore, from_url

DATE_PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime
    etag: str | None

    @property
    def identity(self) -> str:
        """Changes when the object is replaced: the ETag, else size and modification time."""
        return self.etag or f"{self.size}:{self.last_modified.isoformat()}"


def open_store(location: str) -> ObjectStore:
    if "://" in location:
        return from_url(location)
    folder = Path(location).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return LocalStore(folder)


def _visible(key: str) -> bool:
    return not PurePosixPath(key).name.startswith(".")  # .DS_Store, upload temp files


def list_objects(store: ObjectStore, prefix: str) -> Iterator[StoredObject]:
    """Every visible object under prefix (obstore's local listing is unsorted)."""
    for page in obstore.list(store, prefix=prefix, chunk_size=1000):
        for meta in page:
            if _visible(meta["path"]):
                yield StoredObject(meta["path"], meta["size"], meta["last_modified"], meta.get("e_tag"))


def list_inbox(store: ObjectStore, prefix: str, since: date | None) -> Iterator[StoredObject]:
    """Loose files at the inbox's top, other folders, and date partitions from `since` on."""
    listing = obstore.list_with_delimiter(store, prefix.rstrip("/") or None)
    for meta in listing["objects"]:
        if _visible(meta["path"]):
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


def read_object(store: ObjectStore, key: str) -> bytes:
    return bytes(obstore.get(store, key).bytes())


def put_object(store: ObjectStore, key: str, data: bytes) -> None:
    obstore.put(store, key, data)


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
