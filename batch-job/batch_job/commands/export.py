"""Reviewed returns as a labelled dataset in the Kaggle layout training reads: styles.csv + images/.

Only items a reviewer gave a category are exported ("unusable" ones are not); ids are
`r<result id>`, so they never collide with the catalogue's numeric ids when both train a model.
An exported decision is stamped (results.exported_at) and cannot be undone since.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from batch_job.ledger.decided import left_out_of_export, take_for_export
from batch_job.ledger.schema import utcnow
from batch_job.photos.located import Photos
from batch_job.photos.objects import ObjectTooLarge

COLUMNS = ["id", "articleType", "modelCategory", "reviewedBy", "reviewedAt", "objectKey"]


@dataclass
class Export:
    written: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # object key -> why it was left out


def export_labels(engine: Engine, photos: Photos, out: Path) -> Export:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    report = Export()
    stamp = utcnow()
    left_out = []
    with (out / "styles.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in take_for_export(engine, stamp):
            try:
                data = photos.original(row)
            except (FileNotFoundError, ObjectTooLarge) as exc:
                report.missing[row.object_key] = str(exc)
                left_out.append(row.id)
                continue
            image_id = f"r{row.id}"
            (images / f"{image_id}.jpg").write_bytes(data)
            writer.writerow(
                [
                    image_id,
                    row.final_category,
                    row.category,
                    row.reviewed_by,
                    row.reviewed_at.isoformat(),
                    row.object_key,
                ]
            )
            report.written += 1
    left_out_of_export(engine, left_out, stamp)
    return report
