"""One nightly run: list new photos, claim them, classify, record, route, summarise."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import PurePosixPath

from obstore.store import ObjectStore
from tqdm import tqdm

from batch_job.client import ServedModel, TorchServeClient
from batch_job.ledger import DEAD, FAILED, NEEDS_REVIEW, OK, PENDING, Ledger, Outcome, Result
from batch_job.settings import Settings
from batch_job.store import list_inbox, listing_start, partition_of, route_object
from common.objectstore import open_store, read_object

COMMIT_EVERY = 64  # results per transaction: few commits, little redone after a crash
log = logging.getLogger("refund-batch")


@dataclass
class RunStats:
    run_id: str
    shard: str
    model: ServedModel
    review_threshold: float
    listed: int = 0
    registered: int = 0
    claimed: int = 0
    statuses: Counter = field(default_factory=Counter)
    newest_partition: date | None = None
    seconds: float = 0.0

    @property
    def failure_rate(self) -> float:
        bad = self.statuses[FAILED] + self.statuses[DEAD] + self.statuses[PENDING]
        return bad / self.claimed if self.claimed else 0.0


def new_run_id(shard_index: int) -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + f"-s{shard_index}"


def shard_of(key: str, shard_count: int) -> int:
    """Stable across processes and machines (unlike Python's salted hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % shard_count


def review_threshold(setting: str, model: ServedModel) -> float:
    if setting != "auto":
        return float(setting)
    return model.review_threshold if model.review_threshold is not None else 0.5


def process(store: ObjectStore, client: TorchServeClient, key: str) -> Outcome:
    try:
        image = read_object(store, key)
    except FileNotFoundError:
        return Outcome(FAILED, error="object disappeared between listing and reading")
    except Exception as exc:  # a store hiccup must not fail the night: retry next run
        return Outcome(PENDING, error=f"could not read from store: {exc!r}")
    return client.classify(image)


def route(store: ObjectStore, settings: Settings, row: Result, outcome: Outcome) -> None:
    """Copy or move a classified image to sorted/<category>/... or review/..."""
    if settings.route == "none" or outcome.status not in (OK, NEEDS_REVIEW):
        return
    relative = str(PurePosixPath(row.object_key).relative_to(settings.inbox_prefix.rstrip("/")))
    folder = f"sorted/{outcome.category}" if outcome.status == OK else "review"
    route_object(store, row.object_key, f"{folder}/{relative}", move=settings.route == "move")


def run(settings: Settings, client: TorchServeClient, ledger: Ledger, store: ObjectStore) -> RunStats:
    """Classify what is new; the caller owns the client, ledger and store."""
    started = time.monotonic()
    model = client.describe()
    client.review_threshold = review_threshold(settings.review_threshold, model)
    shard = f"{settings.shard_index}/{settings.shard_count}"
    stats = RunStats(new_run_id(settings.shard_index), shard, model, client.review_threshold)
    ledger.start_run(stats.run_id, shard, model.version)

    since = listing_start(ledger.newest_finished_partition(shard), settings.lookback_days)
    objects = [
        obj
        for obj in list_inbox(store, settings.inbox_prefix, since)
        if shard_of(obj.key, settings.shard_count) == settings.shard_index
    ]
    partitions = [p for p in (partition_of(obj.key, settings.inbox_prefix) for obj in objects) if p]
    stats.newest_partition = max(partitions, default=None)
    stats.listed, stats.registered = len(objects), ledger.register(objects, model.version)
    work = deque(
        row_id
        for row_id, key in ledger.claimable(model.version)
        if shard_of(key, settings.shard_count) == settings.shard_index
    )
    log.info(
        "listed", extra={"run_id": stats.run_id, "listed": stats.listed, "new": stats.registered, "todo": len(work)}
    )

    lease = timedelta(seconds=settings.lease_seconds)
    bar = tqdm(total=len(work), unit="img", disable=not sys.stderr.isatty())
    in_flight: dict[Future, Result] = {}
    done: list[tuple[Result, Outcome]] = []

    def flush() -> None:
        ledger.record(done, stats.run_id, settings.max_attempts)
        for row, outcome in done:
            route(store, settings, row, outcome)
        log.info("committed", extra={"run_id": stats.run_id, "results": len(done), "progress": dict(stats.statuses)})
        done.clear()

    with ThreadPoolExecutor(settings.concurrency) as pool, bar:
        while work or in_flight:
            # Claim a little ahead of the workers so TorchServe's batches stay full.
            if work and len(in_flight) < 2 * settings.concurrency:
                chunk = [work.popleft() for _ in range(min(settings.concurrency, len(work)))]
                for row in ledger.claim(chunk, stats.run_id, model.version, lease):
                    in_flight[pool.submit(process, store, client, row.object_key)] = row
                    stats.claimed += 1
                continue
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                row, outcome = in_flight.pop(future), future.result()
                done.append((row, outcome))
                stats.statuses[outcome.status] += 1
                bar.update(1)
            if len(done) >= COMMIT_EVERY:
                flush()
        flush()
    stats.seconds = time.monotonic() - started
    return stats


def open_run(settings: Settings) -> tuple[TorchServeClient, Ledger, ObjectStore]:
    client = TorchServeClient(
        settings.torchserve_url, settings.model_name, settings.concurrency, settings.request_timeout, settings.retries
    )
    return client, Ledger(settings.database_url), open_store(settings.store)
