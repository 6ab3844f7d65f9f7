"""The night's figures on the review app's metrics port, after real nights against a real TorchServe, on both
backends (SQLite + a folder, PostgreSQL 15 + an S3 server): what Prometheus reads is what the nights stored."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from batch_job.ledger.results import Ledger, Verdict
from batch_job.ledger.schema import DEAD, PENDING, STATUSES, Run, aware
from batch_job.night.nightly import nightly
from batch_job.settings import Settings
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.objectstore import StoredObject
from tests.ports import distinct_free_ports
from tests.review_support import users_file
from tests.test_batch_job import put_photos

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset], float]
DASHBOARD = REPO / "helm" / "refund-sorter" / "dashboards" / "refund-sorter.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}


@contextlib.contextmanager
def review_process(settings: Settings, folder: Path) -> Iterator[tuple[str, str]]:
    """`refund-batch review` in its own process, configured as the chart does (REFUND_* env, the metrics port
    included); yields the page's and the metrics port's URLs."""
    page, metrics = distinct_free_ports(2)
    env = {
        **os.environ,
        **{f"REFUND_{key.upper()}": str(value) for key, value in vars(settings).items()},
        "REFUND_REVIEW_USERS_FILE": str(users_file(folder)),
        "REFUND_REVIEW_METRICS_PORT": str(metrics),
    }
    command = [sys.executable, "-m", "batch_job", "review", "--port", str(page)]
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{page}/healthz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the review app did not start:\n{process.communicate()[0]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{page}", f"http://127.0.0.1:{metrics}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def scrape(url: str) -> Samples:
    text = httpx.get(f"{url}/metrics", timeout=10).raise_for_status().text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series_names(url: str) -> set[str]:
    """The series names as exposed, which Prometheus stores: prometheus_client's parser would add `_total` to
    TorchServe's counters that lack it (ts_inference_latency_microseconds)."""
    text = httpx.get(f"{url}/metrics", timeout=10).raise_for_status().text
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def named(samples: Samples, name: str) -> dict[frozenset, float]:
    return {labels: number for (metric, labels), number in samples.items() if metric == name}


def metric_names(promql: str) -> set[str]:
    """The series names a PromQL expression selects: identifiers that are no function, keyword or label."""
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', " ", promql)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    return {
        name
        for name, call in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", bare)
        if not call and name not in PROMQL_WORDS
    }


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    variables = [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return queries + [re.sub(r"^label_values\((.*),[^,]*\)$", r"\1", variable) for variable in variables]


def leave_one_pending_and_one_dead(ledger: Ledger) -> None:
    """Two photos listed but not classified; one of them dead-lettered the way the ledger does it (an answer
    that counts as an attempt, with max_attempts reached)."""
    now = datetime.now(UTC)
    ledger.register(StoredObject(f"inbox/later/{name}.jpg", 100, now, f"etag-{name}") for name in ("a", "b"))
    (first_id, _), *_ = ledger.claimable()
    (row,) = ledger.claim([first_id], "test-dead-letter", timedelta(minutes=1))
    ledger.record([(row, Verdict(PENDING, error="500 from TorchServe", counts_as_attempt=True))], "test-dead-letter", 1)


def test_the_metrics_port_exposes_the_last_finished_night_as_stored(backend, torchserve, tmp_path):
    settings = backend(torchserve)
    put_photos(settings, 6, day="2026-11-22")
    first = nightly(settings)
    put_photos(settings, 12)  # the second night: another partition, with a corrupt photo (failed)
    night = nightly(settings)
    ledger = Ledger(settings.database_url)
    leave_one_pending_and_one_dead(ledger)
    with Session(ledger.engine) as session:
        run = session.scalars(select(Run).where(Run.run_id == night.stats.run_id)).one()
    with review_process(settings, tmp_path) as (page_url, metrics_url):
        samples = scrape(metrics_url)
        page_metrics = httpx.get(f"{page_url}/metrics", timeout=10)
        review_series = series_names(metrics_url)

    shard = night.stats.shard
    summary = night.summary
    finished, started = aware(run.finished_at), aware(run.started_at)
    # The second night, not the first: the newest finished run is the one shown.
    assert value(samples, "refund_night_finished_timestamp_seconds", shard=shard) == pytest.approx(finished.timestamp())
    assert first.summary["statuses"] != summary["statuses"]
    assert value(samples, "refund_night_duration_seconds", shard=shard) == pytest.approx(
        (finished - started).total_seconds()
    )
    images = {dict(labels)["status"]: number for labels, number in named(samples, "refund_night_images").items()}
    assert images == summary["statuses"] and images["failed"] == 1 and sum(images.values()) == 13
    assert value(samples, "refund_night_failure_rate", shard=shard) == pytest.approx(summary["failure_rate"])
    assert summary["failure_rate"] == pytest.approx(1 / 13)
    assert value(samples, "refund_night_max_failure_rate", shard=shard) == settings.max_failure_rate
    assert value(samples, "refund_night_auto_sorted_share", shard=shard) == pytest.approx(summary["auto_sorted_share"])
    drift = summary["drift"]
    assert value(samples, "refund_night_drift_psi", shard=shard, against="training") == pytest.approx(
        drift["psi_vs_training"]
    )
    assert value(samples, "refund_night_drift_psi", shard=shard, against="recent_runs") == pytest.approx(
        drift["psi_vs_recent_runs"]
    )
    assert value(samples, "refund_night_drift_warnings", shard=shard) == len(drift["warnings"])
    # The whole store, every night's rows and those left for the next: pending and dead-lettered totals.
    stored = Counter(row.status for row in ledger.results())
    results = {dict(labels)["status"]: number for labels, number in named(samples, "refund_results").items()}
    assert results == {status: stored[status] for status in STATUSES} and (results[PENDING], results[DEAD]) == (1, 1)
    # The page's port serves no metrics: scrapers reach the metrics port only, and need nothing else.
    assert page_metrics.status_code == 404
    # The app's own counters share that port (login throttling, 0 until a login is refused).
    assert "refund_review_logins_throttled_total" in review_series
    # Every series the Grafana dashboard queries is one the review app or this TorchServe exposes.
    exposed = review_series | series_names(f"http://127.0.0.1:{torchserve.metrics}")
    queried = set().union(*map(metric_names, dashboard_queries()))
    assert {"ts_inference_latency_microseconds", "refund_night_images", "refund_results"} <= queried
    assert queried <= exposed, f"the dashboard queries series nobody exposes: {sorted(queried - exposed)}"


def test_no_finished_night_exposes_no_night_and_every_status_at_zero(backend, tmp_path):
    """A fresh store: no night series at all (the 'no night for 26 h' alert's absent() case), and every status
    at 0, so the first dead-lettered images raise refund_results{status="dead"} from 0 (the alert's difference)."""
    settings = backend(None)
    Ledger(settings.database_url)
    with review_process(settings, tmp_path) as (_, metrics_url):
        samples = scrape(metrics_url)
    night_series = {name for name, _ in samples if name.startswith("refund_night_")}
    assert not night_series
    results = {dict(labels)["status"]: number for labels, number in named(samples, "refund_results").items()}
    assert results == dict.fromkeys(STATUSES, 0)
    assert value(samples, "refund_review_queue_size") == 0
