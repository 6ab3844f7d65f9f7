"""Prepare the dataset: filter classes, drop missing/corrupt images, split deterministically.

Writes `<out>/manifest.csv` (id, label, split) and `<out>/dataset.json` (the source,
classes, what was left out and why, split sizes). Training reads only these two files.

    refund-train prepare --data ../shared/datasets/fashion-product-images-small --out var/data
    refund-train prepare --data ... --out var/data --extra var/reviewed   # plus reviewed returns
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

from common.styles import read_class_tree, read_styles
from handlers.presets import InvalidImageError, decode_image
from training.catalog import ImageSource, extra_id

SPLITS = ("train", "val", "test")


def split_of(image_id: str, val: float, test: float, seed: int) -> str:
    """The split of one image, from its id alone: a hash mapped to [0, 1) against the split fractions.

    Ranking a class's ids would divide it exactly, but a class that gains images (reviewed returns each
    week) would then push old training photos into the test split, where the promotion gate would score
    a model on photos it learned from. A threshold never moves an image; each class is divided in the
    same proportions on average."""
    position = int(hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()[:16], 16) / 16**16
    return "test" if position < test else "val" if position < test + val else "train"


def assign_splits(ids_by_label: dict[str, list[str]], val: float, test: float, seed: int) -> dict[str, str]:
    """id -> split for every id; see split_of."""
    return {image_id: split_of(image_id, val, test, seed) for ids in ids_by_label.values() for image_id in ids}


def usable_images(root: Path, label_column: str) -> tuple[dict[str, list[str]], list[str], dict[str, str], int]:
    """ids by label of the images that are there and decode; the missing, the corrupt (with why),
    and how many rows of styles.csv were malformed."""
    rows, malformed = read_styles(root / "styles.csv", label_column)
    source = ImageSource(root)
    missing, corrupt, ids_by_label = [], {}, defaultdict(list)
    for row in rows:
        raw = source.read(row.image_id)
        if raw is None:
            missing.append(row.image_id)
            continue
        try:
            decode_image(raw)
        except InvalidImageError as exc:
            corrupt[row.image_id] = str(exc)
            continue
        ids_by_label[row.label].append(row.image_id)
    return ids_by_label, missing, corrupt, malformed


def prepare_extra(
    index: int, root: Path, classes: set[str], label_column: str, val: float, test: float, seed: int
) -> tuple[dict[str, str], dict[str, str], dict]:
    """An --extra folder (e.g. refund-batch export-labels' reviewed returns): its images of known
    classes, split on their own so that adding extras never moves a catalogue image between splits.
    Returns manifest id -> label, manifest id -> split, and what dataset.json records about it."""
    ids_by_label, missing, corrupt, malformed = usable_images(root, label_column)
    kept = {label: [extra_id(index, i) for i in ids] for label, ids in ids_by_label.items() if label in classes}
    assignment = assign_splits(kept, val, test, seed)
    summary = {
        "root": str(root.resolve()),
        "images": len(assignment),
        "unknown_classes": {label: len(ids) for label, ids in sorted(ids_by_label.items()) if label not in classes},
        "malformed_rows": malformed,
        "missing_images": missing,
        "corrupt_images": corrupt,
        "splits": dict(Counter(assignment.values())),
    }
    return {image_id: label for label, ids in kept.items() for image_id in ids}, assignment, summary


def prepare(
    data: Path,
    out: Path,
    label_column: str,
    min_images: int,
    val: float,
    test: float,
    seed: int,
    extras: list[Path] | None = None,
) -> dict:
    ids_by_label, missing, corrupt, malformed = usable_images(data, label_column)
    counts = Counter({label: len(ids) for label, ids in ids_by_label.items()})
    kept = {label: ids for label, ids in ids_by_label.items() if len(ids) >= min_images}
    dropped = {label: n for label, n in sorted(counts.items()) if n < min_images}
    assignment = assign_splits(kept, val, test, seed)
    labels = {image_id: label for label, ids in kept.items() for image_id in ids}
    extra_summaries = []
    for index, root in enumerate(extras or [], 1):
        extra_labels, extra_assignment, extra_summary = prepare_extra(
            index, root, set(kept), label_column, val, test, seed
        )
        labels.update(extra_labels)
        assignment.update(extra_assignment)
        extra_summaries.append(extra_summary)

    tree = read_class_tree(data / "styles.csv", label_column)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "split"])
        for image_id in sorted(assignment, key=lambda i: (labels[i], i)):
            writer.writerow([image_id, labels[image_id], assignment[image_id]])
    summary = {
        "data_root": str(data.resolve()),
        "label_column": label_column,
        "min_images": min_images,
        "seed": seed,
        "classes": sorted(kept),
        "class_counts": {label: counts[label] for label in sorted(kept)},
        "dropped_classes": dropped,
        "malformed_rows": malformed,
        "missing_images": missing,
        "corrupt_images": corrupt,
        "splits": dict(Counter(assignment.values())),
        "extras": extra_summaries,
        "class_tree": {label: ancestors for label, ancestors in tree.items() if label in kept},
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with styles.csv and images/ or images.zip")
    parser.add_argument(
        "--out", type=Path, default=Path("var/data"), help="where manifest.csv goes (default: var/data)"
    )
    parser.add_argument(
        "--label-column", default="articleType", help="styles.csv column to classify (default: articleType)"
    )
    parser.add_argument(
        "--min-images", type=int, default=100, help="leave out classes with fewer images (default: 100)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of each class for validation (default: 0.1)"
    )
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of each class for test (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=[],
        help="more labelled photos in the same layout, e.g. reviewed returns from `refund-batch export-labels` "
        "(repeatable); split on their own, and their test share is the reviewed-returns evaluation set",
    )
    args = parser.parse_args(argv)
    summary = prepare(
        args.data,
        args.out,
        args.label_column,
        args.min_images,
        args.val_fraction,
        args.test_fraction,
        args.seed,
        args.extra,
    )
    print(f"{len(summary['classes'])} classes kept, splits {summary['splits']}")
    if summary["dropped_classes"]:
        listed = ", ".join(f"{label} ({n})" for label, n in summary["dropped_classes"].items())
        print(f"left out {len(summary['dropped_classes'])} classes with < {args.min_images} images: {listed}")
    print(
        f"skipped: {len(summary['missing_images'])} missing, {len(summary['corrupt_images'])} corrupt images, "
        f"{summary['malformed_rows']} malformed rows; details in {args.out / 'dataset.json'}"
    )
    for extra in summary["extras"]:
        print(
            f"extra {extra['root']}: {extra['images']} images, splits {extra['splits']}; left out "
            f"{sum(extra['unknown_classes'].values())} of classes the catalogue does not train"
        )


if __name__ == "__main__":
    main()
