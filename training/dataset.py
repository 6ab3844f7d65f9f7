"""The prepared split's images, held as encoded bytes and decoded by a preset on access."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import Dataset

from training.catalog import EXTRA_ID, PreparedSource


class EncodedImages(Dataset):
    """(JPEG bytes, class index) pairs held in memory; decoded by the preset per access."""

    def __init__(self, items: list[tuple[bytes, int]], transform) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        data, target = self.items[index]
        return self.transform(data), target


def split_class_counts(prepared: Path, split: str, classes: list[str]) -> list[int]:
    """Images per class in the split as prepared, by class index: the class mix the catalogue has,
    before any --max-per-class cap (what the batch job's drift check compares nights with)."""
    counts = dict.fromkeys(classes, 0)
    with (prepared / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == split:
                counts[row["label"]] += 1
    return list(counts.values())


def load_split(
    prepared: Path,
    split: str,
    classes: list[str],
    source: PreparedSource,
    max_per_class: int | None,
    reviewed_returns: bool | None = None,
) -> list[tuple[bytes, int]]:
    """The split's images as bytes; at most `max_per_class` per class (manifest order is stable).
    `reviewed_returns`: only the --extra photos (True), only the catalogue's (False), or both (None)."""
    index_of = {name: i for i, name in enumerate(classes)}
    taken: dict[str, int] = defaultdict(int)
    items = []
    with (prepared / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != split or (max_per_class and taken[row["label"]] >= max_per_class):
                continue
            if reviewed_returns is not None and bool(EXTRA_ID.match(row["id"])) != reviewed_returns:
                continue
            data = source.read(row["id"])
            if data is not None:  # prepare already verified it; a file removed since is skipped
                taken[row["label"]] += 1
                items.append((data, index_of[row["label"]]))
    return items
