"""Reads the Kaggle "Fashion Product Images" layout: styles.csv plus images/<id>.jpg.

The images may sit in an `images/` folder (as Kaggle ships them) or in `images.zip`.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StyleRow:
    image_id: str
    label: str


def read_styles(path: Path, label_column: str) -> tuple[list[StyleRow], int]:
    """Rows with an id and a non-empty label, and how many malformed rows were skipped.

    Some Kaggle rows carry unquoted commas in productDisplayName; the columns before it
    are intact, so ids and labels are taken by position and the overflow is ignored.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if label_column not in header:
            raise ValueError(f"{path} has no column {label_column!r}; columns are {header}")
        id_at, label_at = header.index("id"), header.index(label_column)
        rows, skipped = [], 0
        for fields in reader:
            if len(fields) <= max(id_at, label_at) or not fields[id_at].strip() or not fields[label_at].strip():
                skipped += 1
                continue
            rows.append(StyleRow(fields[id_at].strip(), fields[label_at].strip()))
    return rows, skipped


class ImageSource:
    """Image bytes by product id, from `<root>/images/` or `<root>/images.zip`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "images"
        self.zip_path = root / "images.zip"
        if self.folder.is_dir():
            self._zip = None
        elif self.zip_path.is_file():
            self._zip = zipfile.ZipFile(self.zip_path)
            self._members = {Path(name).stem: name for name in self._zip.namelist() if name.endswith(".jpg")}
        else:
            raise FileNotFoundError(f"{root} has neither an images/ folder nor images.zip")

    def read(self, image_id: str) -> bytes | None:
        """The image's bytes, or None where the catalogue lists an image that is not there."""
        if self._zip is None:
            path = self.folder / f"{image_id}.jpg"
            return path.read_bytes() if path.is_file() else None
        member = self._members.get(image_id)
        return self._zip.read(member) if member else None
