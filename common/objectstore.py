"""Object-store access for training (the model registry) and the nightly job (photos, reports).

A local folder by default, any S3-compatible store in production: obstore gives one API over both.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import obstore
from obstore.store import LocalStore, ObjectStore, from_url

if TYPE_CHECKING:
    from obstore import ObjectMeta  # a TypedDict of the type stubs only

TRANSFERS = 16  # concurrent uploads or downloads of a folder's files


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
    """A folder path, or a URL obstore understands (s3://bucket/prefix, file:///...)."""
    if "://" in location:
        return from_url(location)
    folder = Path(location).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return LocalStore(folder)


def visible(key: str) -> bool:
    return not PurePosixPath(key).name.startswith(".")  # .DS_Store, upload temp files


def stored_object(meta: ObjectMeta) -> StoredObject:
    return StoredObject(meta["path"], meta["size"], meta["last_modified"], meta.get("e_tag"))


def list_objects(store: ObjectStore, prefix: str) -> Iterator[StoredObject]:
    """Every visible object under prefix (obstore's local listing is unsorted)."""
    for page in obstore.list(store, prefix=prefix, chunk_size=1000):
        for meta in page:
            if visible(meta["path"]):
                yield stored_object(meta)


def read_object(store: ObjectStore, key: str) -> bytes:
    return bytes(obstore.get(store, key).bytes())


def put_object(store: ObjectStore, key: str, data: bytes) -> None:
    obstore.put(store, key, data)


def upload_file(store: ObjectStore, key: str, path: Path, create: bool = False) -> None:
    """path's content as key, in parts where it is large; create: fail if key exists (AlreadyExistsError)."""
    obstore.put(store, key, path, mode="create" if create else "overwrite")


def download_object(store: ObjectStore, key: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for chunk in obstore.get(store, key):  # streamed: an images.zip is hundreds of MB
            handle.write(chunk)


def download_prefix(store: ObjectStore, prefix: str, destination: Path) -> int:
    """Every visible object under prefix into destination, at its path below prefix; how many."""
    prefix = prefix.rstrip("/") + "/"
    keys = [stored.key for stored in list_objects(store, prefix)]
    # Many small objects (a catalogue's images/ holds 44,000): one request at a time would take minutes.
    with ThreadPoolExecutor(TRANSFERS) as pool:
        list(pool.map(lambda key: download_object(store, key, destination / key.removeprefix(prefix)), keys))
    return len(keys)
