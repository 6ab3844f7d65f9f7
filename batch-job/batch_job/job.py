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
from batch_job.ledger import DEAD, FAILED, NEEDS_REVIEW, OK, PENDING, Ledger, Outcome, Result
from batch_job.settings import Settings
from batch_job.store import (
    ObjectTooLarge,
    list_inbox,
    listing_start,
    malformed_partition,
    partition_date,
    partition_name,
    read_image,
    route_object,
)
from common.objectstore import StoredObject, open_store

COMMIT_EVERY = 64  # results per transaction: few commits, little redone after a crash
log = logging.getLogger("refund-batch")


@dataclass
class RunStats:
    run_id: str
    shard: str
    model: ServedModel
    review_threshold: float
    full_listing: bool = False
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


def outcome_of(answer: Answer, threshold: float) -> Outcome:
    """The ledger's record of TorchServe's answer; whose fault a failure was follows from its type."""
    match answer:
        case Prediction():
            return Outcome(
                NEEDS_REVIEW if answer.probability < threshold else OK,
                category=answer.category,
                probability=answer.probability,
                top3=answer.top3,
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


def destination(settings: Settings, key: str, outcome: Outcome) -> str | None:
    """Where routing sends a classified image: sorted/<category>/... or review/...; None: it stays."""
    if settings.route == "none" or outcome.status not in (OK, NEEDS_REVIEW):
        return None
    relative = str(PurePosixPath(key).relative_to(settings.inbox_prefix.rstrip("/")))
    folder = f"sorted/{outcome.category}" if outcome.status == OK else "review"
    return f"{folder}/{relative}"


def process(store: ObjectStore, client: TorchServeClient, settings: Settings, threshold: float, row: Result) -> Outcome:
    if row.size > settings.max_image_bytes:
        return Outcome(FAILED, error=f"object is {row.size} bytes, more than the {settings.max_image_bytes} allowed")
    try:
        image = read_image(store, row.object_key, settings.max_image_bytes)
    except FileNotFoundError:
        return Outcome(FAILED, error="object disappeared between listing and reading")
    except ObjectTooLarge as exc:
        return Outcome(FAILED, error=str(exc))
    except Exception as exc:  # a store hiccup must not fail the night, nor count against the image
        return Outcome(PENDING, error=f"could not read from store: {exc!r}")
    outcome = outcome_of(client.classify(image), threshold)
    return replace(outcome, route_to=destination(settings, row.object_key, outcome))


def route(store: ObjectStore, settings: Settings, ledger: Ledger, stats: RunStats, todo: list[Result]) -> None:
    """Copy or move committed results' images; a failure is logged and the next run tries again."""
    for row in todo:
        try:
            route_object(store, row.object_key, row.route_to, move=settings.route == "move")
        except Exception as exc:  # any store error: the row stays unrouted, the night goes on
            stats.routing_failures[row.object_key] = repr(exc)
            log.warning("routing failed", extra={"key": row.object_key, "to": row.route_to, "error": repr(exc)})
            continue
        stats.routing_failures.pop(row.object_key, None)
        ledger.mark_routed(row.id)


def mine(key: str, settings: Settings) -> bool:
    """Whether this shard handles the key."""
    return shard_of(key, settings.shard_count) == settings.shard_index


def list_new(store: ObjectStore, settings: Settings, ledger: Ledger, stats: RunStats) -> list[StoredObject]:
    """This shard's listed objects; records the watermark and warns about partitions that are no dates."""
    watermark = ledger.newest_finished_partition(stats.shard)
    since = None if stats.full_listing else listing_start(watermark, settings.lookback_days)
    objects = [obj for obj in list_inbox(store, settings.inbox_prefix, since) if mine(obj.key, settings)]
    today = datetime.now(UTC).date()
    names = {partition_name(obj.key, settings.inbox_prefix) for obj in objects}
    days = [day for day in map(partition_date, names) if day is not None]
    stats.newest_partition = max((day for day in days if day <= today), default=None)
    stats.future_partitions = sorted(day.isoformat() for day in days if day > today)
    stats.malformed_partitions = sorted(name for name in names if malformed_partition(name))
    if stats.future_partitions:
        log.warning("partitions dated after today: listed every night", extra={"folders": stats.future_partitions})
    if stats.malformed_partitions:
        log.warning("folders named like dates that are none", extra={"folders": stats.malformed_partitions})
    return objects


def needs_full_listing(ledger: Ledger, shard: str, every_days: int) -> bool:
    last = ledger.last_full_listing(shard)
    return last is None or last <= datetime.now(UTC) - timedelta(days=every_days)


def run(settings: Settings, client: TorchServeClient, ledger: Ledger, store: ObjectStore) -> RunStats:
    """Classify what is new; the caller owns the client, ledger and store."""
    started = time.monotonic()
    model = client.describe()
    threshold = review_threshold(settings.review_threshold, model)
    shard = f"{settings.shard_index}/{settings.shard_count}"
    stats = RunStats(new_run_id(settings.shard_index), shard, model, threshold)
    stats.full_listing = needs_full_listing(ledger, shard, settings.full_listing_days)
    ledger.start_run(stats.run_id, shard, model.version, stats.full_listing)

    objects = list_new(store, settings, ledger, stats)
    stats.listed, stats.registered = len(objects), ledger.register(objects)
    work = deque(row_id for row_id, key in ledger.claimable() if mine(key, settings))
    log.info(
        "listed",
        extra={
            "run_id": stats.run_id,
            "listed": stats.listed,
            "new": stats.registered,
            "todo": len(work),
            "full_listing": stats.full_listing,
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
        route(store, settings, ledger, stats, [row for row in committed if row.route_to])
        log.info("committed", extra={"run_id": stats.run_id, "results": len(done), "progress": dict(stats.statuses)})
        done.clear()

    try:
        with ThreadPoolExecutor(settings.concurrency) as pool, bar:
            while work or in_flight:
                # Claim a little ahead of the workers so TorchServe's batches stay full.
                if work and len(in_flight) < 2 * settings.concurrency:
                    chunk = [work.popleft() for _ in range(min(settings.concurrency, len(work)))]
                    for row in ledger.claim(chunk, stats.run_id, lease):
                        in_flight[pool.submit(process, store, client, settings, threshold, row)] = row
                        stats.claimed += 1
                    continue
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    done.append((in_flight.pop(future), future.result()))
                    bar.update(1)
                if len(done) >= COMMIT_EVERY:
                    flush()
    finally:
        flush()  # whatever ends the loop, the results already in hand are committed
    # Routing that failed or was interrupted after an earlier commit (this run's or a killed one's).
    route(store, settings, ledger, stats, [row for row in ledger.unrouted() if mine(row.object_key, settings)])
    stats.seconds = time.monotonic() - started
    return stats


def open_run(settings: Settings) -> tuple[TorchServeClient, Ledger, ObjectStore]:
    client = TorchServeClient(
        settings.torchserve_url, settings.model_name, settings.concurrency, settings.request_timeout, settings.retries
    )
    return client, Ledger(settings.database_url), open_store(settings.store)
