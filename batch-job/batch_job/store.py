"""The object store holding the photos: a local folder by default, S3 in production.

obstore gives one API over both. Its local listing is unsorted, so callers sort by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import obstore
from obstore.store import LocalStore, ObjectStore, from_url


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


def list_objects(store: ObjectStore, prefix: str) -> Iterator[StoredObject]:
    """Every object under prefix, except hidden files such as .DS_Store."""
    for page in obstore.list(store, prefix=prefix, chunk_size=1000):
        for meta in page:
            if meta["path"].rsplit("/", 1)[-1].startswith("."):
                continue
            yield StoredObject(meta["path"], meta["size"], meta["last_modified"], meta.get("e_tag"))


def read_object(store: ObjectStore, key: str) -> bytes:
    return bytes(obstore.get(store, key).bytes())
