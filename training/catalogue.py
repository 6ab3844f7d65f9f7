"""The catalogue data in the registry's store, so that the weekly retraining (refund-train retrain)
needs nothing from a laptop:

    refund-train catalogue upload --data ../shared/datasets/fashion-product-images-small

uploads a Kaggle-layout folder (styles.csv, plus images.zip or images/) to datasets/catalogue/ of the
store `refund-train registry` uses (--registry, env REFUND_REGISTRY, default var/registry). Running it
again replaces the catalogue there. Reviewed returns go to datasets/reviewed/<UTC time>/, one folder
per export, written by the retraining job itself.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import obstore
from obstore.store import ObjectStore

from common.objectstore import TRANSFERS, list_objects, open_store, upload_file
from training.registry import add_registry_argument

CATALOGUE = "datasets/catalogue/"
REVIEWED = "datasets/reviewed/"


class DatasetError(Exception):
    """A folder that is not in the Kaggle layout, or a store without the data asked for."""


def kaggle_files(folder: Path) -> list[Path]:
    """What prepare reads of a Kaggle-layout folder, relative to it: styles.csv and the images."""
    if not (folder / "styles.csv").is_file():
        raise DatasetError(
            f"{folder} has no styles.csv: not a Kaggle-layout dataset (styles.csv + images/ or images.zip)"
        )
    if (folder / "images").is_dir():
        images = sorted(path.relative_to(folder) for path in (folder / "images").rglob("*") if path.is_file())
    elif (folder / "images.zip").is_file():
        images = [Path("images.zip")]
    else:
        raise DatasetError(f"{folder} has neither an images/ folder nor images.zip")
    return [Path("styles.csv"), *images]


def upload_dataset(store: ObjectStore, folder: Path, prefix: str, create: bool = False) -> list[str]:
    """The Kaggle-layout folder's files under prefix; the keys written. create: fail on an existing key.
    styles.csv goes last: a dataset whose upload was cut short has none, and readers skip it."""
    styles, *images = kaggle_files(folder)
    with ThreadPoolExecutor(TRANSFERS) as pool:
        list(pool.map(lambda path: upload_file(store, prefix + path.as_posix(), folder / path, create), images))
    upload_file(store, prefix + styles.as_posix(), folder / styles, create)
    return [prefix + path.as_posix() for path in (styles, *images)]


def replace_catalogue(store: ObjectStore, folder: Path) -> int:
    """The folder as datasets/catalogue/: uploaded first, then what the old one had beyond it is deleted,
    so a job starting meanwhile finds a whole catalogue. Returns the number of files."""
    written = set(upload_dataset(store, folder, CATALOGUE))
    stale = [stored.key for stored in list_objects(store, CATALOGUE) if stored.key not in written]
    if stale:
        obstore.delete(store, stale)
    return len(written)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = f"upload a Kaggle-layout folder to {CATALOGUE} of the store; running it again replaces it"
    upload = commands.add_parser("upload", help=summary, description=summary)
    upload.add_argument("--data", type=Path, required=True, help="folder with styles.csv and images/ or images.zip")
    add_registry_argument(upload)
    args = parser.parse_args(argv)
    try:
        files = replace_catalogue(open_store(args.registry), args.data)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"uploaded {files} files of {args.data} to {CATALOGUE} of {args.registry}")
    return 0
