"""Reading a photo with a size limit, and copying or moving one so that an interruption never loses it."""

from __future__ import annotations

import obstore
from obstore.store import ObjectStore


class ObjectTooLarge(ValueError):
    """An object bigger than the job will read into memory."""


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
