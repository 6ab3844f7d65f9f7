"""Listing the inbox and registering what this shard finds, a page at a time: a night's memory does not grow
with the store."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from itertools import islice

from obstore.store import ObjectStore

from batch_job.ledger.results import Ledger
from batch_job.night.stats import RunStats
from batch_job.photos.inbox import list_inbox, malformed_partition, partition_date, partition_name
from batch_job.settings import Settings

LISTING_PAGE = 1000  # listed objects registered at once: a page is all of the listing the night holds
log = logging.getLogger("refund-batch")


def shard_of(key: str, shard_count: int) -> int:
    """Stable across processes and machines (unlike Python's salted hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % shard_count


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
