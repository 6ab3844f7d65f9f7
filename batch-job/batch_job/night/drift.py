"""Drift of the category mix and of confidence: the early sign that the photo setup or the
product range changed."""

from __future__ import annotations

import math
from collections import Counter

SMOOTHING = 1e-4  # keeps the log finite for categories absent on one side


def population_stability_index(actual: dict[str, float], expected: dict[str, float]) -> float:
    """PSI = sum((a - e) * ln(a / e)) over categories; < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted."""
    categories = set(actual) | set(expected)
    actual_total = sum(actual.values()) or 1.0
    expected_total = sum(expected.values()) or 1.0
    index = 0.0
    for category in categories:
        a = actual.get(category, 0.0) / actual_total + SMOOTHING
        e = expected.get(category, 0.0) / expected_total + SMOOTHING
        index += (a - e) * math.log(a / e)
    return index


def images_to_tell(categories: int, threshold: float) -> int:
    """How many images a night needs before a PSI above `threshold` is more than sampling noise.

    For n images drawn from the expected mix over k categories, n * PSI is about chi-squared with
    k - 1 degrees of freedom; its 95th percentile is roughly (k - 1) + 2 * sqrt(2 * (k - 1))."""
    freedom = max(1, categories - 1)
    return math.ceil((freedom + 2 * math.sqrt(2 * freedom)) / threshold)


def drift_report(
    category_counts: Counter,
    mean_confidence: float | None,
    training_prior: dict[str, float],
    previous: list[dict],
    threshold: float,
) -> dict:
    """Compare this run with the training split and with earlier runs' summaries."""
    report: dict = {"threshold": threshold, "warnings": []}
    if not category_counts:
        return report
    images = sum(category_counts.values())
    report["images_to_tell"] = images_to_tell(len(set(category_counts) | set(training_prior)), threshold)
    # Below that, a shifted mix is indistinguishable from chance: the PSI is reported, never warned about.
    telling = images >= report["images_to_tell"]
    if training_prior:
        report["psi_vs_training"] = population_stability_index(dict(category_counts), training_prior)
        if telling and report["psi_vs_training"] > threshold:
            report["warnings"].append(
                f"category mix differs from training (PSI {report['psi_vs_training']:.2f} > {threshold})"
            )
    earlier = Counter()
    for summary in previous:
        earlier.update(summary.get("category_counts", {}))
    if earlier:
        report["psi_vs_recent_runs"] = population_stability_index(dict(category_counts), dict(earlier))
        if telling and report["psi_vs_recent_runs"] > threshold:
            report["warnings"].append(
                f"category mix moved against the last {len(previous)} runs "
                f"(PSI {report['psi_vs_recent_runs']:.2f} > {threshold})"
            )
    history = [s["mean_confidence"] for s in previous if s.get("mean_confidence") is not None]
    report["mean_confidence_history"] = [*reversed(history), mean_confidence]
    if history and mean_confidence is not None:
        baseline = sum(history) / len(history)
        report["mean_confidence_change"] = mean_confidence - baseline
        if mean_confidence < baseline - 0.1:
            report["warnings"].append(
                f"mean confidence fell from {baseline:.2f} to {mean_confidence:.2f} "
                f"against the last {len(history)} runs"
            )
    return report
