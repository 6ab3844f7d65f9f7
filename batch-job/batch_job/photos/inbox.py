"""The photo inbox in the object store: date-partitioned listing and placing new photos.

The inbox is date-partitioned (inbox/YYYY-MM-DD/...). Every night lists every partition, a page at a
time, so a photo put late into an old partition is found the next night; the ledger tells what is new.
A folder whose name looks like a date but is none (2026-02-30), and partitions dated after today, are
reported. Generic store access is in `common.objectstore`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath

import obstore
from obstore.exceptions import InvalidPathError
from obstore.store import ObjectStore

from common.objectstore import StoredObject, read_object, stored_object, visible

DATE_PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ListingError:
    """A key of the inbox the store client refused, and why (the client's message names the key)."""

    prefix: str  # the folder being listed
    error: str


def list_inbox(store: ObjectStore, prefix: str, errors: list[ListingError]) -> Iterator[StoredObject]:
    """Every visible object in the inbox, a folder at a time, streamed: loose files at its top, then each folder.

    A key the store client refuses (an empty segment, `.` or `..`, a file name that is no UTF-8) is added to
    `errors` and the listing goes on: a folder store lists on past that one file; an S3 listing loses the page
    (up to 1,000 keys) that holds it and the rest of that folder, as the client drops the page whole and cannot
    go on after it, and the other folders are listed.
    """
    try:
        top = obstore.list_with_delimiter(store, prefix.rstrip("/") or None)
    except InvalidPathError as exc:  # a refused key at the inbox's top: list the inbox as one stream
        errors.append(ListingError(prefix, _reason(exc)))
        yield from _list_folder(store, prefix, errors)
        return
    for meta in top["objects"]:
        if visible(meta["path"]):
            yield stored_object(meta)
    for folder in sorted(top["common_prefixes"]):
        yield from _list_folder(store, folder.rstrip("/") + "/", errors)


def _list_folder(store: ObjectStore, prefix: str, errors: list[ListingError]) -> Iterator[StoredObject]:
    # One object per chunk: a chunk the client refuses then holds the refused key alone, never good ones too.
    chunks = iter(obstore.list(store, prefix=prefix, chunk_size=1))
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except InvalidPathError as exc:
            errors.append(ListingError(prefix, _reason(exc)))
            continue
        for meta in chunk:
            if visible(meta["path"]):
                yield stored_object(meta)


def _reason(error: Exception) -> str:
    return str(error).splitlines()[0]  # the rest is the client's debug dump


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
