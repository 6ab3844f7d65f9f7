"""Human-readable summaries of the results store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from batch_job.ledger.schema import DEAD, FAILED, NEEDS_REVIEW, OK, PENDING, Result
from batch_job.night.summary import sorted_by_level
from common.styles import read_styles


def category_summary(rows: list[Result]) -> str:
    """A table of items per category with how many were sure enough to route automatically."""
    classified = [row for row in rows if row.status in (OK, NEEDS_REVIEW)]
    per_category = Counter(row.category for row in classified)
    auto = Counter(row.category for row in classified if row.status == OK)
    lines = [f"{'category':<28}{'items':>7}{'auto-sorted':>13}{'to review':>11}"]
    for category, count in per_category.most_common():
        lines.append(f"{category:<28}{count:>7}{auto[category]:>13}{count - auto[category]:>11}")
    statuses = Counter(row.status for row in rows)
    lines.append(
        f"{'total':<28}{len(classified):>7}{statuses[OK]:>13}{statuses[NEEDS_REVIEW]:>11}"
        f"   failed: {statuses[FAILED]}   dead: {statuses[DEAD]}   pending: {statuses[PENDING]}"
    )
    levels = sorted_by_level(classified)
    lines.append("sorted at each level: " + ", ".join(f"{level} {value['items']}" for level, value in levels.items()))
    lines += [f"  {row.status} {row.object_key}: {row.error}" for row in rows if row.status in (FAILED, DEAD)]
    return "\n".join(lines)


def read_labels(styles_csv: Path, label_column: str) -> dict[str, str]:
    """Product id -> label; rows without an id or a label are no label (training reads styles.csv alike)."""
    rows, _ = read_styles(styles_csv, label_column)
    return {row.image_id: row.label for row in rows}


def accuracy_report(rows: list[Result], labels: dict[str, str], classes: Collection[str] | None) -> dict:
    """Accuracy of classified items whose product id (the file name) has a label.

    Labels the model was never trained on cannot be right; they are counted apart.
    """
    judged = [(row, labels.get(PurePosixPath(row.object_key).stem)) for row in rows if row.status in (OK, NEEDS_REVIEW)]
    judged = [(row, label) for row, label in judged if label is not None]
    known = [(row, label) for row, label in judged if classes is None or label in classes]
    correct = sum(row.category == label for row, label in known)
    auto = [(row, label) for row, label in known if row.status == OK]
    return {
        "labelled": len(judged),
        "outside_taxonomy": len(judged) - len(known),
        "in_taxonomy": len(known),
        "accuracy": correct / len(known) if known else None,
        "accuracy_all_labelled": correct / len(judged) if judged else None,
        "auto_sorted": len(auto),
        "auto_sorted_precision": sum(row.category == label for row, label in auto) / len(auto) if auto else None,
    }
