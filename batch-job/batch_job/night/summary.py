"""What a run produced, as a JSON-able summary and a manifest, published to runs/<run-id>/."""

from __future__ import annotations

import json
from collections import Counter

from obstore.store import ObjectStore

from batch_job.ledger.schema import FINAL, NEEDS_REVIEW, OK, Result
from batch_job.night.drift import drift_report
from batch_job.night.stats import RunStats
from batch_job.settings import Settings
from common.objectstore import put_object
from common.sorting import LEVELS

HISTOGRAM_BINS = 10
REVIEW = "review"  # beside the levels: where an item no level was certain of went


def level_of(row: Result) -> str:
    """Where a classified item went: the level it was sorted to (OK rows of before revision 0008: their article
    type), or review."""
    return (row.sort_level or "article") if row.status == OK else REVIEW


def sorted_by_level(classified: list[Result]) -> dict[str, dict]:
    """Items and share of the classified ones at each level, deepest first, then review; every level, 0 or not."""
    counts = Counter(level_of(row) for row in classified)
    return {
        level: {"items": counts[level], "share": counts[level] / len(classified) if classified else None}
        for level in (*LEVELS, REVIEW)
    }


def summarize(stats: RunStats, rows: list[Result], previous: list[dict], drift_threshold: float) -> dict:
    classified = [row for row in rows if row.status in (OK, NEEDS_REVIEW)]
    counts = Counter(row.category for row in classified)
    confidences = [row.probability for row in classified]
    mean_confidence = sum(confidences) / len(confidences) if confidences else None
    histogram = [0] * HISTOGRAM_BINS
    for value in confidences:
        histogram[min(HISTOGRAM_BINS - 1, int(value * HISTOGRAM_BINS))] += 1
    statuses = Counter(row.status for row in rows)
    return {
        "run_id": stats.run_id,
        "shard": stats.shard,
        "model": {"name": stats.model.name, "version": stats.model.version},
        # The article level's threshold for classes without their own (the operator's, where set).
        "review_threshold": stats.model.rule.threshold if stats.review_threshold is None else stats.review_threshold,
        "per_class_thresholds": stats.review_threshold is None and bool(stats.model.rule.levels["article"].groups),
        "route_levels": stats.route_levels,
        "seconds": round(stats.seconds, 3),
        "listed": stats.listed,
        "listing": {
            "future_partitions": stats.future_partitions,
            "malformed_partitions": stats.malformed_partitions,
            "errors": [{"prefix": error.prefix, "error": error.error} for error in stats.listing_errors],
            "seconds": round(stats.listing_seconds, 3),
            "registration_seconds": round(stats.registration_seconds, 3),
        },
        "answered_by": dict(stats.answered_by),
        "lost_leases": stats.lost_leases,
        "routing_failures": stats.routing_failures,
        "new": stats.registered,
        "processed": len(rows),
        "images_per_second": round(len(rows) / stats.seconds, 2) if stats.seconds else None,
        "statuses": dict(statuses),
        "auto_sorted_share": statuses[OK] / len(classified) if classified else None,
        "sorted_by_level": sorted_by_level(classified),
        "failure_rate": stats.failure_rate,
        "category_counts": dict(counts.most_common()),
        "review_counts": dict(Counter(row.category for row in classified if row.status == NEEDS_REVIEW)),
        "mean_confidence": mean_confidence,
        "confidence_histogram": histogram,
        "failures": [
            {"key": row.object_key, "status": row.status, "error": row.error}
            for row in rows
            if row.status not in (OK, NEEDS_REVIEW)
        ],
        "drift": drift_report(counts, mean_confidence, stats.model.class_prior, previous, drift_threshold),
    }


def manifest_lines(rows: list[Result]) -> str:
    """One JSON line per image this run handled."""
    return "".join(
        json.dumps(
            {
                "key": row.object_key,
                "identity": row.identity,
                "status": row.status,
                "final": row.status in FINAL,
                "category": row.category,
                "probability": row.probability,
                "top3": row.top3,
                "sort_level": row.sort_level,
                "sorted_as": row.sorted_as,
                "error": row.error,
                "attempts": row.attempts,
                "latency_ms": row.latency_ms,
            }
        )
        + "\n"
        for row in rows
    )


def publish(store: ObjectStore, settings: Settings, summary: dict, rows: list[Result], html: str) -> str:
    """Write summary.json, manifest.jsonl and report.html; returns the run's folder."""
    folder = f"{settings.runs_prefix.rstrip('/')}/{summary['run_id']}"
    put_object(store, f"{folder}/summary.json", json.dumps(summary, indent=1).encode())
    put_object(store, f"{folder}/manifest.jsonl", manifest_lines(rows).encode())
    put_object(store, f"{folder}/report.html", html.encode())
    return folder
