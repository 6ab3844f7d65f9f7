"""The catalogue's styles.csv (Kaggle "Fashion Product Images" layout): each product id and its label.

Training reads it to build the dataset, its class tree and to score labelled photos; the nightly
report reads it to score a night against the sample's labels.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
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


# The catalogue's taxonomy, top first: an articleType lies under one subCategory, under one masterCategory.
TAXONOMY = ("masterCategory", "subCategory", "articleType")


def read_class_tree(path: Path, label_column: str) -> dict[str, list[str]]:
    """Each label's ancestors in the taxonomy, top first (articleType "Casual Shoes" -> ["Footwear", "Shoes"]).

    A label filed under more than one parent in a few rows takes the parent most of its rows name.
    Empty when the label is not a taxonomy column or styles.csv lacks the columns above it."""
    if label_column not in TAXONOMY:
        return {}
    above = list(TAXONOMY[: TAXONOMY.index(label_column)])
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if not above or not set(above) <= set(header):
            return {}
        at = [header.index(column) for column in [*above, label_column]]
        parents: dict[str, Counter] = defaultdict(Counter)
        for fields in reader:
            if len(fields) > max(at) and all(fields[index].strip() for index in at):
                *ancestors, label = (fields[index].strip() for index in at)
                parents[label][tuple(ancestors)] += 1
    return {label: list(counts.most_common(1)[0][0]) for label, counts in sorted(parents.items())}
