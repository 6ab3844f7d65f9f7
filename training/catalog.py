"""Image bytes of the Kaggle "Fashion Product Images" layout: images/<id>.jpg beside styles.csv.

The images may sit in an `images/` folder (as Kaggle ships them) or in `images.zip`; styles.csv is
read by `common.styles`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

EXTRA_ID = re.compile(r"^extra(\d+):(.+)$")  # manifest ids of images from prepare's n-th --extra folder


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


def extra_id(index: int, image_id: str) -> str:
    return f"extra{index}:{image_id}"


class PreparedSource:
    """Image bytes by manifest id: catalogue ids, and extra<n>:<id> from the n-th --extra folder."""

    def __init__(self, dataset: dict) -> None:
        self.catalogue = ImageSource(Path(dataset["data_root"]))
        self.extras = [ImageSource(Path(extra["root"])) for extra in dataset.get("extras", [])]

    def read(self, image_id: str) -> bytes | None:
        match = EXTRA_ID.match(image_id)
        if match is None:
            return self.catalogue.read(image_id)
        return self.extras[int(match[1]) - 1].read(match[2])
