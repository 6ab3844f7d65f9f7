"""The catalogue's styles.csv (Kaggle "Fashion Product Images" layout): each product id and its label.

Training reads it to build the dataset and to score labelled photos; the nightly report reads it to
score a night against the sample's labels.
"""

from __future__ import annotations

import csv
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
