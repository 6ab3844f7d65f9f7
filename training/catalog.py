"""Image bytes of the Kaggle "Fashion Product Images" layout: images/<id>.jpg beside styles.csv.

The images may sit in an `images/` folder (as Kaggle ships them) or in `images.zip`; styles.csv is
read by `common.styles`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path


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
