"""One nightly run, in the steps torchvision's references split training into: list and register
(night.listing), then claim a little ahead, classify a batch (night.classify, on a pool of threads), record it
and route it; at the end, the routing earlier commits left to do. Each step is a function or a small object
that takes what it works on: nothing changes state it was not handed."""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from functools import partial

from obstore.store import ObjectStore
from tqdm import tqdm

from batch_job.ledger.results import Ledger, Verdict
from batch_job.ledger.routing import mark_routed, move_source
from batch_job.ledger.schema import Result
from batch_job.night.classify import process, review_threshold
from batch_job.night.client import TorchServeClient
from batch_job.night.listing import mine, register_listing
from batch_job.night.shutdown import Shutdown, Stopped
from batch_job.night.stats import RunStats
from batch_job.photos.objects import route_object
from batch_job.settings import Settings
from common.objectstore import open_store

COMMIT_EVERY = 64  # results per transaction: few commits, little redone after a crash
log = logging.getLogger("refund-batch")

Answered = tuple[Result, Verdict]


def new_run_id(shard_index: int) -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + f"-s{shard_index}"


class ClaimsAhead:
    """The claimable rows of this shard, claimed a chunk at a time just ahead of the workers."""

    def __init__(self, ledger: Ledger, run_id: str, row_ids: Iterable[int], lease: timedelta, chunk: int) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.waiting = deque(row_ids)
        self.lease = lease
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.waiting)

    def take(self) -> list[Result]:
        """Claims the next chunk; returns the rows this run now holds (another run may have taken some)."""
        chunk = [self.waiting.popleft() for _ in range(min(self.chunk, len(self.waiting)))]
        return self.ledger.claim(chunk, self.run_id, self.lease)

    def stop(self) -> None:
        """No more claims this night."""
        self.waiting.clear()


class Classifying:
    """Claimed rows on TorchServe: each a request on a pool of `concurrency` threads, up to `ahead` of them
    queued or running, so TorchServe's batches stay full."""

    def __init__(self, classify: Callable[[Result], Verdict], concurrency: int, ahead: int) -> None:
        self.classify = classify
        self.pool = ThreadPoolExecutor(concurrency)
        self.ahead = ahead
        self.in_flight: dict[Future, Result] = {}

    def __len__(self) -> int:
        return len(self.in_flight)

    def has_room(self) -> bool:
        return len(self.in_flight) < self.ahead

    def send(self, rows: list[Result]) -> None:
        for row in rows:
            self.in_flight[self.pool.submit(self.classify, row)] = row

    def answered(self) -> list[Answered]:
        """Waits for at least one answer; returns those in hand."""
        finished, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
        return [(self.in_flight.pop(future), future.result()) for future in finished]

    def cancel_queued(self) -> list[Result]:
        """Cancels the requests no worker has started; returns their rows."""
        return [self.in_flight.pop(future) for future in list(self.in_flight) if future.cancel()]

    def close(self) -> list[Result]:
        """Waits for the running requests, never the queued ones; returns the rows left unanswered."""
        self.pool.shutdown(cancel_futures=True)
        return list(self.in_flight.values())


def record(ledger: Ledger, settings: Settings, stats: RunStats, answered: list[Answered]) -> list[Result]:
    """Commits a batch of verdicts in one transaction and counts them; returns the committed rows, each with
    where it goes (`route_to`). A row whose lease another run took over is not committed."""
    committed = ledger.record(answered, stats.run_id, settings.max_attempts)
    verdicts = {row.id: verdict for row, verdict in answered}
    stats.lost_leases += len(answered) - len(committed)
    for row in committed:
        verdict = verdicts[row.id]
        stats.statuses[verdict.status] += 1
        if verdict.model_version:
            stats.answered_by[verdict.model_version] += 1
        row.route_to = verdict.route_to
    log.info("committed", extra={"run_id": stats.run_id, "results": len(answered), "progress": dict(stats.statuses)})
    return committed


def route(store: ObjectStore, settings: Settings, ledger: Ledger, stats: RunStats, todo: list[Result]) -> None:
    """Copy or move committed results' images, and finish decided photos' moves out of review/ that the review
    page could not make; a failure is logged and the next run tries again."""
    for row in todo:
        source = move_source(row)
        try:
            # A photo outside the inbox (in review/) is always moved: the inbox keeps the original of a copy.
            route_object(store, source, row.route_to, move=settings.route == "move" or source != row.object_key)
        except Exception as exc:  # any store error: the row stays unrouted, the night goes on
            stats.routing_failures[row.object_key] = repr(exc)
            log.warning("routing failed", extra={"key": row.object_key, "to": row.route_to, "error": repr(exc)})
            continue
        stats.routing_failures.pop(row.object_key, None)
        mark_routed(ledger.engine, row.id, source, row.route_to)


def commit(
    store: ObjectStore,
    settings: Settings,
    ledger: Ledger,
    stats: RunStats,
    answered: list[Answered],
    shutdown: Shutdown,
) -> None:
    """Record a batch, then route it; a stopping night leaves the routing to the next (route_to is recorded)."""
    committed = record(ledger, settings, stats, answered)
    if not shutdown.requested.is_set():
        route(store, settings, ledger, stats, [row for row in committed if row.route_to])


def classify_claims(
    store: ObjectStore,
    settings: Settings,
    ledger: Ledger,
    stats: RunStats,
    claims: ClaimsAhead,
    classifying: Classifying,
    shutdown: Shutdown,
) -> list[int]:
    """Claim ahead, classify, commit every COMMIT_EVERY answers, until nothing is claimable or SIGTERM stops
    it. Whatever ends it, the answers in hand are committed and the claims it will not answer released at
    once (the next night need not wait out the lease); returns those."""
    answered: list[Answered] = []
    cancelled: list[Result] = []  # claimed, then cancelled before TorchServe saw them
    bar = tqdm(total=len(claims), unit="img", disable=not sys.stderr.isatty())
    try:
        with bar:
            while claims or classifying:
                if shutdown.requested.is_set():
                    # No new claims; queued requests are cancelled, those running are answered and recorded.
                    claims.stop()
                    cancelled += classifying.cancel_queued()
                    if not classifying:
                        break
                if claims and classifying.has_room():
                    rows = claims.take()
                    classifying.send(rows)
                    stats.claimed += len(rows)
                    continue
                batch = classifying.answered()
                bar.update(len(batch))
                answered += batch
                if len(answered) >= COMMIT_EVERY:
                    commit(store, settings, ledger, stats, answered, shutdown)
                    answered = []
    finally:
        unanswered = classifying.close()
        commit(store, settings, ledger, stats, answered, shutdown)
        if released := [row.id for row in [*cancelled, *unanswered]]:
            ledger.release(released, stats.run_id)
    return released


def run(
    settings: Settings, client: TorchServeClient, ledger: Ledger, store: ObjectStore, shutdown: Shutdown | None = None
) -> RunStats:
    """Classify what is new; the caller owns the client, ledger and store. Raises Stopped once `shutdown` was
    requested (SIGTERM): the answers in hand are recorded first and the other claims released."""
    shutdown = shutdown or Shutdown()  # never requested where the caller handles no signal
    started = time.monotonic()
    model = client.describe()
    shard = f"{settings.shard_index}/{settings.shard_count}"
    threshold = review_threshold(settings.review_threshold)
    stats = RunStats(new_run_id(settings.shard_index), shard, model, threshold, settings.route_levels)
    ledger.start_run(stats.run_id, shard, model.version, model.classes)

    register_listing(store, settings, ledger, stats)
    todo = [row_id for row_id, key in ledger.claimable() if mine(key, settings)]
    log.info(
        "listed",
        extra={
            "run_id": stats.run_id,
            "listed": stats.listed,
            "new": stats.registered,
            "todo": len(todo),
            "listing_seconds": round(stats.listing_seconds, 3),
            "registration_seconds": round(stats.registration_seconds, 3),
        },
    )

    lease = timedelta(seconds=settings.lease_seconds)
    claims = ClaimsAhead(ledger, stats.run_id, todo, lease, settings.concurrency)
    classify = partial(process, store, client, settings, model.rule)
    classifying = Classifying(classify, settings.concurrency, ahead=2 * settings.concurrency)
    with shutdown.draining():
        released = classify_claims(store, settings, ledger, stats, claims, classifying, shutdown)
    if shutdown.requested.is_set():
        log.error(
            "stopped by SIGTERM: the answers in hand are recorded, the other photos left for the next night",
            extra={"run_id": stats.run_id, "recorded": dict(stats.statuses), "released": len(released)},
        )
        raise Stopped
    # Routing that failed or was interrupted after an earlier commit (this run's or a killed one's).
    route(store, settings, ledger, stats, [row for row in ledger.unrouted() if mine(row.object_key, settings)])
    stats.seconds = time.monotonic() - started
    return stats


def open_run(settings: Settings) -> tuple[TorchServeClient, Ledger, ObjectStore]:
    client = TorchServeClient(
        settings.torchserve_url, settings.model_name, settings.concurrency, settings.request_timeout, settings.retries
    )
    return client, Ledger(settings.database_url, settings.upgrades_schema), open_store(settings.store)
