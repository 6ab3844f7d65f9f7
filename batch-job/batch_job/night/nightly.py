"""A whole night: classify what is new, then summarise, publish and close the run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from batch_job.ledger.decided import review_stats
from batch_job.ledger.schema import Result
from batch_job.night import html_report, job
from batch_job.night.shutdown import Shutdown
from batch_job.night.stats import RunStats
from batch_job.night.summary import publish, summarize
from batch_job.photos.located import Photos
from batch_job.settings import Settings

RECENT_RUNS = 7  # drift baseline: about a week of nights


@dataclass(frozen=True)
class Night:
    stats: RunStats
    rows: list[Result]
    summary: dict
    folder: str


def serving(settings: Settings):
    """Scale-to-zero mode scales TorchServe up for the run and back down after it."""
    if not settings.scale_deployment:
        return contextlib.nullcontext()
    if settings.shard_count > 1:
        # The first shard to finish would scale TorchServe away under the others.
        raise ValueError("scale-to-zero runs with one shard; scale TorchServe in a separate step for sharded runs")
    from batch_job.night.scaler import serving_scaled  # the kubernetes client is needed only in this mode

    return serving_scaled(settings)


def nightly(settings: Settings, shutdown: Shutdown | None = None) -> Night:
    """Raises ServingUnavailable, before claiming anything, when TorchServe cannot be reached.

    A scale-down that fails after a good run does not stop the night: it is published and finished,
    and the summary's `scale_down_error` says TorchServe was left running. Raises Stopped after SIGTERM
    (`shutdown`), having scaled down: the night is neither published nor finished."""
    client, ledger, store = job.open_run(settings)
    try:
        with serving(settings) as scaled:
            stats = job.run(settings, client, ledger, store, shutdown)
    finally:
        client.close()
    rows = ledger.results(stats.run_id)
    previous = [run.summary for run in ledger.recent_runs(RECENT_RUNS, before=stats.run_id) if run.summary]
    summary = summarize(stats, rows, previous, settings.drift_threshold)
    summary["scale_down_error"] = scaled.scale_down_error if scaled else None
    summary["max_failure_rate"] = settings.max_failure_rate  # the threshold the night's alert compares with
    photos = Photos(store, settings.inbox_prefix, settings.route, max_bytes=settings.max_image_bytes)
    report = html_report.render(summary, rows, photos, review_stats(ledger.engine))
    folder = publish(store, settings, summary, rows, report)
    ledger.finish_run(stats.run_id, stats.newest_partition, summary)
    return Night(stats, rows, summary, folder)
