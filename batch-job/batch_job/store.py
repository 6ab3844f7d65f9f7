"""The photo inbox in the object store: date-partitioned listing, placing new photos, routing.

The inbox is date-partitioned (inbox/YYYY-MM-DD/...), so a night lists only recent partitions
and its cost grows with new images, not history. A folder whose name looks like a date but is
none (2026-02-30), and partitions dated after today, are no partitions: they are listed every
night and never move the watermark. Generic store access is in `common.objectstore`.
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


class ObjectTooLarge(ValueError):
    """An object bigger than the job will read into memory."""


def list_inbox(store: ObjectStore, prefix: str, since: date | None) -> Iterator[StoredObject]:
    """Loose files at the inbox's top, other folders, and date partitions from `since` on."""
    listing = obstore.list_with_delimiter(store, prefix.rstrip("/") or None)
    for meta in listing["objects"]:
        if visible(meta["path"]):
            yield StoredObject(meta["path"], meta["size"], meta["last_modified"], meta.get("e_tag"))
    for folder in sorted(listing["common_prefixes"]):
        day = partition_date(PurePosixPath(folder).name)
        if since is not None and day is not None and day < since:
            continue
        yield from list_objects(store, folder.rstrip("/") + "/")


def partition_name(key: str, prefix: str) -> str:
    """The inbox folder a key is in ("" for a loose file at the inbox's top)."""
    parts = PurePosixPath(key[len(prefix) :]).parts if key.startswith(prefix) else ()
    return parts[0] if len(parts) > 1 else ""


def partition_date(name: str) -> date | None:
    """The date a folder name stands for; None for other folders and for date-shaped non-dates."""
    if not DATE_PARTITION.match(name):
        return None
    try:
        return date.fromisoformat(name)
    except ValueError:
        return None


def malformed_partition(name: str) -> bool:
    return bool(DATE_PARTITION.match(name)) and partition_date(name) is None


def partition_of(key: str, prefix: str) -> date | None:
    return partition_date(partition_name(key, prefix))


def listing_start(newest_done: date | None, lookback_days: int) -> date | None:
    """Partitions before this were complete when the last run finished; late arrivals get `lookback_days`."""
    return newest_done - timedelta(days=lookback_days) if newest_done else None


def read_image(store: ObjectStore, key: str, max_bytes: int) -> bytes:
    """The object's bytes, refused (ObjectTooLarge) before its body is read when it is bigger than max_bytes."""
    answer = obstore.get(store, key)
    size = answer.meta["size"]
    if size > max_bytes:
        raise ObjectTooLarge(f"object is {size} bytes, more than the {max_bytes} allowed (--max-image-bytes)")
    return bytes(answer.bytes())


def route_object(store: ObjectStore, key: str, destination: str, move: bool) -> None:
    """Copy key to destination and, for a move, delete the original only once the copy is there with
    the original's size. Safe to repeat after an interruption at any step."""
    try:
        original = obstore.head(store, key)
    except FileNotFoundError:
        if move and _size_of(store, destination) is not None:
            return  # an earlier move got as far as deleting the original
        raise
    obstore.copy(store, key, destination)
    copied = _size_of(store, destination)
    if copied != original["size"]:
        raise OSError(f"copy of {key} to {destination} has {copied} bytes, not {original['size']}; original kept")
    if move:
        obstore.delete(store, key)


def _size_of(store: ObjectStore, key: str) -> int | None:
    try:
        return obstore.head(store, key)["size"]
    except FileNotFoundError:
        return None


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
