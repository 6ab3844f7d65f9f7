"""The HTML report people look at after a night: counts, confidence, review queue and the review
desk's figures, failures, drift. One self-contained file (thumbnails inline), rendered from the
same autoescaping Jinja2 templates as the review page."""

from __future__ import annotations

import base64

from batch_job.ledger.decided import ReviewStats
from batch_job.ledger.schema import NEEDS_REVIEW, Result
from batch_job.photos.located import Photos
from batch_job.templating import environment
from batch_job.thumbnails import make_thumbnail

MAX_THUMBNAILS = 200
LEVEL_NAMES = {
    "article": "article type (sorted/<articleType>/)",
    "sub": "subcategory (sorted/<master>/<sub>/)",
    "master": "master category (sorted/<master>/)",
    "review": "review (review/)",
}
THUMBNAIL = (96, 128)


def thumbnail(photos: Photos, row: Result) -> str:
    """A small JPEG as base64 (from wherever routing put the photo), or "" when it cannot be read."""
    try:
        return base64.b64encode(make_thumbnail(photos.original(row), THUMBNAIL)).decode()
    except Exception:  # a thumbnail is decoration: never fail the report for it
        return ""


def waiting_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    hours = seconds / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def render(summary: dict, rows: list[Result], photos: Photos, review: ReviewStats | None = None) -> str:
    statuses = summary["statuses"]
    share = summary["auto_sorted_share"]
    kpis = [
        ("images", summary["processed"]),
        ("auto-sorted", f"{share:.0%}" if share is not None else "–"),
        ("to review", statuses.get(NEEDS_REVIEW, 0)),
        ("failed", statuses.get("failed", 0) + statuses.get("dead", 0)),
        ("left pending", statuses.get("pending", 0)),
    ]
    review_rows = sorted((row for row in rows if row.status == NEEDS_REVIEW), key=lambda row: row.probability)
    history = summary["drift"].get("mean_confidence_history", [])
    return (
        environment()
        .get_template("report.html")
        .render(
            summary=summary,
            kpis=kpis,
            level_names=LEVEL_NAMES,
            most_items=max(summary["category_counts"].values(), default=1),
            peak=max(summary["confidence_histogram"], default=1) or 1,
            review_rows=review_rows,
            review_items=[(row, thumbnail(photos, row)) for row in review_rows[:MAX_THUMBNAILS]],
            review=review,
            waiting=waiting_time(review.oldest_waiting_seconds) if review else "",
            history=", ".join(f"{value:.2f}" for value in history if value is not None),
        )
    )
