"""Prometheus metrics of the review queue, read from the results store at each scrape, so every
replica reports the same figures and nothing is lost on restart."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from batch_job.review.decisions import review_stats


class ReviewCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = review_stats(self.engine)
        yield GaugeMetricFamily("refund_review_queue_size", "Items waiting for a reviewer", value=stats.queue_size)
        yield GaugeMetricFamily(
            "refund_review_oldest_waiting_seconds",
            "Age of the oldest undecided item (0 when the queue is empty)",
            value=stats.oldest_waiting_seconds or 0.0,
        )
        per_day = GaugeMetricFamily("refund_review_decisions", "Decisions made on a UTC day", labels=["day"])
        for day, count in sorted(stats.decisions_per_day.items()):
            per_day.add_metric([day.isoformat()], count)
        yield per_day
        agreed = GaugeMetricFamily(
            "refund_review_agreement_ratio",
            "Share of reviewed items whose final category is the model's top-1, by that top-1",
            labels=["category"],
        )
        decided = GaugeMetricFamily(
            "refund_review_reviewed_items", "Reviewed items by the model's top-1", labels=["category"]
        )
        for category, (agree, total) in sorted(stats.agreement.items()):
            agreed.add_metric([category], agree / total)
            decided.add_metric([category], total)
        yield agreed
        yield decided


def registry_for(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ReviewCollector(engine))
    return registry
