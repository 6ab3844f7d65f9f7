"""Prometheus metrics of the review queue and of the nights, read from the results store at each scrape, so
every replica reports the same figures and nothing is lost on restart. The nightly job's pod lives minutes and
is never scraped: its figures reach Prometheus from the runs table, here."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import Session

from batch_job.ledger.decided import review_stats
from batch_job.ledger.schema import STATUSES, Result, Run, aware

DRIFT_SCORES = {"training": "psi_vs_training", "recent_runs": "psi_vs_recent_runs"}  # label -> summary key


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


def last_nights(engine: Engine) -> list[Run]:
    """The newest finished run of each shard of the last night's sharding ("i/N" with the newest run's N), so
    shards of an earlier, different sharding do not linger."""
    with Session(engine) as session:
        newest = (
            select(Run.shard, func.max(Run.finished_at).label("finished_at"))
            .where(Run.finished_at.is_not(None))
            .group_by(Run.shard)
            .subquery()
        )
        query = select(Run).join(newest, and_(Run.shard == newest.c.shard, Run.finished_at == newest.c.finished_at))
        runs = {run.shard: run for run in session.scalars(query.order_by(Run.finished_at, Run.run_id))}
    if not runs:
        return []
    shard_count = max(runs.values(), key=lambda run: aware(run.finished_at)).shard.split("/")[-1]
    return [run for shard, run in sorted(runs.items()) if shard.split("/")[-1] == shard_count]


def results_by_status(engine: Engine) -> dict[str, int]:
    """Every status, 0 when no row holds it: a series that first appears at N would hide those N from the
    dead-letter alert, which compares the total with its minimum over the last day."""
    with Session(engine) as session:
        rows = session.execute(select(Result.status, func.count()).group_by(Result.status))
        return {**dict.fromkeys(STATUSES, 0), **{status: count for status, count in rows}}


class NightCollector(Collector):
    """The last finished night (each shard's newest finished run) from the runs table, and the results by status."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=["shard", *labels])

        finished = family("refund_night_finished_timestamp_seconds", "When the last finished night ended (unix time)")
        duration = family("refund_night_duration_seconds", "The last finished night's run time, start to finish")
        images = family("refund_night_images", "Images the last finished night handled, by status", "status")
        failure_rate = family(
            "refund_night_failure_rate", "Share of the last night's claimed images failed, dead or left pending"
        )
        threshold = family("refund_night_max_failure_rate", "The failure rate above which the night exits 1")
        auto_sorted = family("refund_night_auto_sorted_share", "Share of the night's classified images sorted alone")
        by_level = family(
            "refund_night_sorted_share",
            "Share of the night's classified images sorted at each level (article, sub, master) or sent to review",
            "level",
        )
        drift = family("refund_night_drift_psi", "The night's category mix drift (PSI), against a baseline", "against")
        warnings = family("refund_night_drift_warnings", "Drift warnings of the last finished night")
        for run in last_nights(self.engine):
            summary = run.summary or {}
            finished.add_metric([run.shard], aware(run.finished_at).timestamp())
            duration.add_metric([run.shard], (aware(run.finished_at) - aware(run.started_at)).total_seconds())
            for status, count in sorted(summary.get("statuses", {}).items()):
                images.add_metric([run.shard, status], count)
            for metric, key in ((failure_rate, "failure_rate"), (threshold, "max_failure_rate")):
                if summary.get(key) is not None:
                    metric.add_metric([run.shard], summary[key])
            if summary.get("auto_sorted_share") is not None:
                auto_sorted.add_metric([run.shard], summary["auto_sorted_share"])
            for level, value in summary.get("sorted_by_level", {}).items():  # nights of before levels have none
                if value["share"] is not None:
                    by_level.add_metric([run.shard, level], value["share"])
            report = summary.get("drift", {})
            for against, key in DRIFT_SCORES.items():
                if report.get(key) is not None:
                    drift.add_metric([run.shard, against], report[key])
            warnings.add_metric([run.shard], len(report.get("warnings", [])))
        yield from (finished, duration, images, failure_rate, threshold, auto_sorted, by_level, drift, warnings)
        results = GaugeMetricFamily("refund_results", "Images in the results store, by status", labels=["status"])
        for status, count in sorted(results_by_status(self.engine).items()):
            results.add_metric([status], count)
        yield results


def registry_for(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ReviewCollector(engine))
    registry.register(NightCollector(engine))
    return registry
