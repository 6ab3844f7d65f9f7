"""Where photos live in the store, in one place: a photo keeps its path below the inbox wherever it goes
(inbox/2026-12-03/x.jpg -> sorted/<category path>/2026-12-03/x.jpg, review/2026-12-03/x.jpg or
unusable/2026-12-03/x.jpg). The night's routing and a reviewer's decision both take their keys from here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

SORTED = "sorted"
REVIEW = "review"
UNUSABLE = "unusable"  # a reviewer's "no class fits"


class UnsafeName(ValueError):
    """A class name that cannot be a folder in the store (it would escape or nest)."""


def folder_name(category: str) -> str:
    """The folder of a class under sorted/: the night's routing and a reviewer's decision keep to this one rule."""
    if not category or "/" in category or "\\" in category or category.startswith("."):
        raise UnsafeName(f"{category!r} cannot name a folder")
    return category


@dataclass(frozen=True)
class Layout:
    inbox_prefix: str

    def relative(self, key: str) -> str:
        """The key below the inbox, which every destination keeps."""
        return str(PurePosixPath(key).relative_to(self.inbox_prefix.rstrip("/")))

    def sorted_key(self, key: str, path: Sequence[str]) -> str:
        """sorted/<articleType>/..., sorted/<master>/<sub>/... or sorted/<master>/... for the category path down
        to the level the photo was sorted to. UnsafeName: a category cannot name a folder."""
        return "/".join([SORTED, *map(folder_name, path), self.relative(key)])

    def review_key(self, key: str) -> str:
        return f"{REVIEW}/{self.relative(key)}"

    def decided_key(self, key: str, final_category: str | None) -> str:
        """Where a reviewer's decision sends the photo: its class's folder, or unusable/ (None)."""
        if final_category is None:
            return f"{UNUSABLE}/{self.relative(key)}"
        return self.sorted_key(key, (final_category,))
