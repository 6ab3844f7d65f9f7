"""One nightly run: list new photos, claim them, classify, record, route, summarise."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import PurePosixPath

from obstore.store import ObjectStore
from tqdm import tqdm

from batch_job.client import (
    Answer,
    ImageRejected,
    Prediction,
    ServedModel,
    ServingFailed,
    ServingUnreachable,
    TorchServeClient,
)
from batch_job.ledger import (
    DEAD,
    FAILED,
    NEEDS_REVIEW,
    OK,
    PENDING,
    Ledger,
    Outcome,
    Result,
    mark_routed,
    move_source,
    too_large,
)
from batch_job.settings import Settings
from batch_job.shutdown import Shutdown, Stopped
from batch_job.store import (
    ListingError,
    ObjectTooLarge,
    UnsafeName,
    folder_name,
    list_inbox,
    malformed_partition,
    partition_date,
    partition_name,
    read_image,
    route_object,
)
from common.objectstore import open_store
from common.sorting import SortingRule

COMMIT_EVERY = 64  # results per transaction: few commits, little redone after a crash
LISTING_PAGE = 1000  # listed objects registered at once: a page is all of the listing the night holds
log = logging.getLogger("refund-batch")


@dataclass
class RunStats:
    run_id: str
    shard: str
    model: ServedModel
    review_threshold: float | None  # the operator's, for every article type; None: the model's rule
    route_levels: str = "article"
    listed: int = 0
    registered: int = 0
    claimed: int = 0
    statuses: Counter = field(default_factory=Counter)
    answered_by: Counter = field(default_factory=Counter)  # model version -> results it answered
    lost_leases: int = 0  # results another run took over before this one committed them
    routing_failures: dict[str, str] = field(default_factory=dict)
    newest_partition: date | None = None
    future_partitions: list[str] = field(default_factory=list)
    malformed_partitions: list[str] = field(default_factory=list)
    listing_errors: list[ListingError] = field(default_factory=list)
    listing_seconds: float = 0.0  # waiting for the store's listing
    registration_seconds: float = 0.0  # registering what it listed
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


def review_threshold(setting: str) -> float | None:
    """The probability every article type needs, where the operator sets one; None ("auto"): the model's rule."""
    return None if setting == "auto" else float(setting)


def outcome_of(
    answer: Answer, rule: SortingRule, route_levels: str = "article", article_threshold: float | None = None
) -> Outcome:
    """The ledger's record of TorchServe's answer; whose fault a failure was follows from its type. An answer
    is OK where the rule sorts it (at some level down to `route_levels`), else it needs review, and a reviewer
    is offered first the upper-level group the model is surest of."""
    match answer:
        case Prediction():
            decided = rule.decide(answer.probabilities, route_levels, article_threshold)
            return Outcome(
                OK if decided else NEEDS_REVIEW,
                category=answer.category,
                probability=answer.probability,
                top3=answer.top3,
                sort_level=decided.level if decided else None,
                sort_path=decided.path if decided else None,
                offered=None if decided else offered(rule, answer),
                model_name=answer.model_name,
                model_version=answer.model_version,
                counts_as_attempt=True,
                latency_ms=answer.latency_ms,
            )
        case ImageRejected():
            return Outcome(FAILED, error=answer.reason, counts_as_attempt=True, latency_ms=answer.latency_ms)
        case ServingFailed():
            return Outcome(PENDING, error=answer.reason, counts_as_attempt=True, latency_ms=answer.latency_ms)
        case ServingUnreachable():
            return Outcome(PENDING, error=answer.reason, latency_ms=answer.latency_ms)


def offered(rule: SortingRule, answer: Prediction) -> dict | None:
    """The upper-level group the model is surest of and which of its top 3 lie under it (the review page
    offers those first); None where the model ships no class tree."""
    group = rule.likeliest_group(answer.probabilities)
    if group is None:
        return None
    under = [guess["category"] for guess in answer.top3 if rule.group(guess["category"], group.level) == group.path]
    return {"level": group.level, "path": list(group.path), "probability": group.probability, "categories": under}


def destination(settings: Settings, key: str, outcome: Outcome) -> str | None:
    """Where routing sends a classified image: sorted/<category>/... (article level), sorted/<master>/<sub>/...
    or sorted/<master>/... (the upper levels), or review/...; None: it stays.
    UnsafeName: a category cannot name a folder."""
    if settings.route == "none" or outcome.status not in (OK, NEEDS_REVIEW):
        return None
    relative = str(PurePosixPath(key).relative_to(settings.inbox_prefix.rstrip("/")))
    path = outcome.sort_path or (outcome.category,)  # rows of old: the article type
    folder = "/".join(["sorted", *map(folder_name, path)]) if outcome.status == OK else "review"
    return f"{folder}/{relative}"


def process(
    store: ObjectStore, client: TorchServeClient, settings: Settings, rule: SortingRule, row: Result
) -> Outcome:
    if row.size > settings.max_image_bytes:
        # Registered before the limit was lowered, or by code that did not check it: still never read.
        return Outcome(FAILED, error=too_large(row.size, settings.max_image_bytes))
    try:
        image = read_image(store, row.object_key, settings.max_image_bytes)
    except FileNotFoundError:
        return Outcome(FAILED, error="object disappeared between listing and reading")
    except ObjectTooLarge as exc:
        return Outcome(FAILED, error=str(exc))
    except Exception as exc:  # a store hiccup must not fail the night, nor count against the image
        return Outcome(PENDING, error=f"could not read from store: {exc!r}")
    outcome = outcome_of(
        client.classify(image), rule, settings.route_levels, review_threshold(settings.review_threshold)
    )
    try:
        return replace(outcome, route_to=destination(settings, row.object_key, outcome))
    except UnsafeName as exc:  # a class the model names with a slash, say: a reviewer sorts its photos
        log.warning("class cannot name a folder: to review", extra={"key": row.object_key, "error": str(exc)})
        outcome = replace(outcome, status=NEEDS_REVIEW, sort_level=None, sort_path=None, error=f"not sorted: {exc}")
        return replace(outcome, route_to=destination(settings, row.object_key, outcome))


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


def mine(key: str, settings: Settings) -> bool:
    """Whether this shard handles the key."""
    return shard_of(key, settings.shard_count) == settings.shard_index


def register_listing(store: ObjectStore, settings: Settings, ledger: Ledger, stats: RunStats) -> None:
    """List every partition of the inbox and register this shard's objects a page at a time, keeping only the
    partitions' figures: the night's memory does not grow with the store. Warns about partitions that are no
    dates and keys the store client refuses."""
    today = datetime.now(UTC).date()
    future: set[str] = set()
    malformed: set[str] = set()
    listing = list_inbox(store, settings.inbox_prefix, stats.listing_errors)
    while True:
        started = time.monotonic()
        page = list(islice(listing, LISTING_PAGE))
        stats.listing_seconds += time.monotonic() - started
        if not page:
            break
        objects = [obj for obj in page if mine(obj.key, settings)]
        for name in {partition_name(obj.key, settings.inbox_prefix) for obj in objects}:
            day = partition_date(name)
            if malformed_partition(name):
                malformed.add(name)
            elif day is not None and day > today:
                future.add(name)
            elif day is not None:
                stats.newest_partition = max(day, stats.newest_partition or day)
        started = time.monotonic()
        stats.registered += ledger.register(objects, max_bytes=settings.max_image_bytes, run_id=stats.run_id)
        stats.registration_seconds += time.monotonic() - started
        stats.listed += len(objects)
    stats.future_partitions, stats.malformed_partitions = sorted(future), sorted(malformed)
    if stats.future_partitions:
        log.warning("partitions dated after today: listed every night", extra={"folders": stats.future_partitions})
    if stats.malformed_partitions:
        log.warning("folders named like dates that are none", extra={"folders": stats.malformed_partitions})
    for error in stats.listing_errors:
        log.warning("a key the store client refuses", extra={"prefix": error.prefix, "error": error.error})


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
    ledger.start_run(stats.run_id, shard, model.version, full_listing=True)  # every night lists every partition

    register_listing(store, settings, ledger, stats)
    work = deque(row_id for row_id, key in ledger.claimable() if mine(key, settings))
    log.info(
        "listed",
        extra={
            "run_id": stats.run_id,
            "listed": stats.listed,
            "new": stats.registered,
            "todo": len(work),
            "listing_seconds": round(stats.listing_seconds, 3),
            "registration_seconds": round(stats.registration_seconds, 3),
        },
    )

    lease = timedelta(seconds=settings.lease_seconds)
    bar = tqdm(total=len(work), unit="img", disable=not sys.stderr.isatty())
    in_flight: dict[Future, Result] = {}
    done: list[tuple[Result, Outcome]] = []

    def flush() -> None:
        committed = ledger.record(done, stats.run_id, settings.max_attempts)
        outcomes = {row.id: outcome for row, outcome in done}
        stats.lost_leases += len(done) - len(committed)
        for row in committed:
            outcome = outcomes[row.id]
            stats.statuses[outcome.status] += 1
            if outcome.model_version:
                stats.answered_by[outcome.model_version] += 1
            row.route_to = outcome.route_to
        if not shutdown.requested.is_set():  # a stopping night leaves routing to the next (route_to is recorded)
            route(store, settings, ledger, stats, [row for row in committed if row.route_to])
        log.info("committed", extra={"run_id": stats.run_id, "results": len(done), "progress": dict(stats.statuses)})
        done.clear()

    unanswered: list[Result] = []  # claimed, then cancelled before TorchServe saw them
    pool = ThreadPoolExecutor(settings.concurrency)
    with shutdown.draining():
        try:
            with bar:
                while work or in_flight:
                    if shutdown.requested.is_set():
                        # No new claims; queued requests are cancelled, those running are answered and recorded.
                        work.clear()
                        unanswered += [in_flight.pop(future) for future in list(in_flight) if future.cancel()]
                        if not in_flight:
                            break
                    # Claim a little ahead of the workers so TorchServe's batches stay full.
                    if work and len(in_flight) < 2 * settings.concurrency:
                        chunk = [work.popleft() for _ in range(min(settings.concurrency, len(work)))]
                        for row in ledger.claim(chunk, stats.run_id, lease):
                            in_flight[pool.submit(process, store, client, settings, model.rule, row)] = row
                            stats.claimed += 1
                        continue
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done.append((in_flight.pop(future), future.result()))
                        bar.update(1)
                    if len(done) >= COMMIT_EVERY:
                        flush()
        finally:
            pool.shutdown(cancel_futures=True)  # an interrupted loop waits for running requests, never queued ones
            flush()  # whatever ends the loop, the results already in hand are committed
            # Claims it will not answer go back at once: the next night need not wait out the lease.
            if released := [row.id for row in [*unanswered, *in_flight.values()]]:
                ledger.release(released, stats.run_id)
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
