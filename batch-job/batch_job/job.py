"""One nightly run: list the inbox, skip what is done, classify the rest, record every result."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime

from obstore.store import ObjectStore
from tqdm import tqdm

from batch_job.client import TorchServeClient
from batch_job.ledger import FAILED, PENDING, Ledger, Outcome
from batch_job.settings import Settings
from batch_job.store import StoredObject, list_objects, open_store, read_object

COMMIT_EVERY = 64  # results per transaction: few commits, little redone after a crash


@dataclass
class RunStats:
    run_id: str
    listed: int = 0
    new: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def left_pending(self) -> int:
        return self.statuses.get(PENDING, 0)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def process(store: ObjectStore, client: TorchServeClient, obj: StoredObject) -> Outcome:
    try:
        image = read_object(store, obj.key)
    except FileNotFoundError:
        return Outcome(FAILED, error="object disappeared between listing and reading")
    except Exception as exc:  # a store hiccup must not fail the night: retry next run
        return Outcome(PENDING, error=f"could not read from store: {exc!r}")
    return client.classify(image)


def run(settings: Settings, progress: Callable | None = None) -> RunStats:
    store = open_store(settings.store)
    ledger = Ledger(settings.database_url)
    stats = RunStats(new_run_id())
    objects = sorted(list_objects(store, settings.inbox_prefix), key=lambda obj: obj.key)
    stats.listed = len(objects)
    todo = ledger.pending_work(objects)
    stats.new = len(todo)
    ledger.claim(todo, stats.run_id)

    client = TorchServeClient(
        settings.torchserve_url,
        settings.model_name,
        settings.concurrency,
        settings.request_timeout,
        settings.retries,
        settings.review_threshold,
    )
    show = progress or (lambda total: tqdm(total=total, unit="img", disable=not sys.stderr.isatty()))
    done: list[tuple[StoredObject, Outcome]] = []
    try:
        with ThreadPoolExecutor(settings.concurrency) as pool, show(len(todo)) as bar:
            futures = {pool.submit(process, store, client, obj): obj for obj in todo}
            for future in as_completed(futures):
                outcome = future.result()
                done.append((futures[future], outcome))
                stats.statuses[outcome.status] = stats.statuses.get(outcome.status, 0) + 1
                bar.update(1)
                if len(done) >= COMMIT_EVERY:
                    ledger.record(done, stats.run_id)
                    done = []
    finally:
        ledger.record(done, stats.run_id)
        client.close()
    return stats
