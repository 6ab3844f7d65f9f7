"""Put photos from the returns desk into the inbox, under the date partition the nightly
listing expects (inbox/YYYY-MM-DD/<file name>). Anything that is not an image is refused."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from obstore.store import ObjectStore
from PIL import Image

from batch_job.photos.inbox import inbox_key
from common.objectstore import put_object


@dataclass
class IngestReport:
    stored: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def candidate_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and every visible file inside the folders named."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            yield path


def image_problem(data: bytes) -> str | None:
    """Why these bytes are not an image we can classify, or None."""
    if not data:
        return "empty file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # PIL raises many types; all mean "not an image"
        return f"not an image: {exc}"
    return None


def ingest(paths: Iterable[Path], store: ObjectStore, inbox_prefix: str, day: date) -> IngestReport:
    report = IngestReport()
    for path in candidate_files(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.refused[str(path)] = f"cannot read: {exc.strerror or exc}"
            continue
        problem = image_problem(data)
        if problem:
            report.refused[str(path)] = problem
            continue
        key, duplicate = inbox_key(inbox_prefix, day, path.name, data, store)
        if duplicate:
            report.already_there.append(key)
            continue
        put_object(store, key, data)
        report.stored.append(key)
    return report
