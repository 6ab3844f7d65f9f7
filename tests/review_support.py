"""What the review tests and benchmark share: a queue of doubtful items put through the real
ledger and routing code, a users file, and the review app served by uvicorn on loopback."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import obstore
import uvicorn
from batch_job.ledger.results import Ledger, Verdict
from batch_job.ledger.routing import mark_routed
from batch_job.ledger.schema import NEEDS_REVIEW
from batch_job.night import classify
from batch_job.photos.objects import route_object
from batch_job.review.auth import hash_line
from batch_job.review.serve import build, server_options
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from prometheus_client import start_http_server

from common.objectstore import list_objects, open_store
from tests.images import SHAPES, encode, product_image
from tests.ports import distinct_free_ports

CLASSES = [*SHAPES, "Cones", "Rings"]
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}


@dataclass(frozen=True)
class Doubtful:
    name: str  # file name inside the inbox's date partition
    top3: list[tuple[str, float]]
    offered: dict | None = None  # the upper-level group the night offers first (classify.offered)


def guesses(index: int) -> list[tuple[str, float]]:
    """A varied, plausible top-3 for the index-th generated item."""
    first, second, third = (CLASSES[(index + shift) % len(CLASSES)] for shift in range(3))
    return [(first, 0.41), (second, 0.33), (third, 0.12)]


def seed_night(
    settings: Settings,
    night: datetime,
    items: list[Doubtful],
    photo_size=(120, 160),
    routing_failed: tuple[str, ...] = (),
) -> list[int]:
    """Photos in the inbox, classified as needs_review by a run on `night`, routed as the job routes.

    Goes through the ledger's own register/claim/record and the job's routing state, as a night does,
    with the model's answers given instead of asked from TorchServe; the items named in
    `routing_failed` stay in the inbox, unrouted. Returns the items' result ids, in the order of `items`.
    """
    store, ledger = open_store(settings.store), Ledger(settings.database_url)
    day = night.date().isoformat()
    run_id = f"{night:%Y%m%dT%H%M%S%f}Z-s0"
    ledger.start_run(run_id, "0/1", "v1", CLASSES)
    for index, item in enumerate(items):
        category = item.top3[0][0] if item.top3[0][0] in SHAPES else "Discs"
        obstore.put(store, f"inbox/{day}/{item.name}", encode(product_image(category, index, size=photo_size)))
    objects = [
        obj for obj in list_objects(store, f"inbox/{day}/") if obj.key.rsplit("/", 1)[1] in {i.name for i in items}
    ]
    ledger.register(objects)
    ids = [row_id for row_id, _ in ledger.claimable()]
    rows = ledger.claim(ids, run_id, timedelta(minutes=5))
    by_name = {item.name: item for item in items}
    results = []
    for row in rows:
        item = by_name[row.object_key.rsplit("/", 1)[1]]
        top3 = item.top3
        outcome = Verdict(
            NEEDS_REVIEW,
            offered=item.offered,
            category=top3[0][0],
            probability=top3[0][1],
            top3=[{"category": name, "probability": p} for name, p in top3],
            model_name="refund-classifier",
            model_version="v1",
        )
        results.append((row, replace(outcome, route_to=classify.destination(settings, row.object_key, outcome))))
    ledger.record(results, run_id, max_attempts=3)
    for row, outcome in results:
        if outcome.route_to and row.object_key.rsplit("/", 1)[1] not in routing_failed:
            route_object(store, row.object_key, outcome.route_to, move=settings.route == "move")
            mark_routed(ledger.engine, row.id, row.object_key, outcome.route_to)
    ledger.finish_run(run_id, night.date(), {})
    ledger.engine.dispose()
    id_of = {row.object_key.rsplit("/", 1)[1]: row.id for row, _ in results}
    return [id_of[item.name] for item in items]


def users_file(folder: Path) -> Path:
    path = folder / "reviewers"
    path.write_text("# name:argon2 hash\n" + "\n".join(hash_line(n, p) for n, p in PASSWORDS.items()) + "\n")
    return path


def classes_file(folder: Path, classes: list[str]) -> Path:
    path = folder / "index_to_name.json"
    path.write_text(json.dumps({str(i): name for i, name in enumerate(classes)}))
    return path


@dataclass(frozen=True)
class RunningApp:
    url: str
    metrics_url: str
    settings: Settings


@contextlib.contextmanager
def review_app(settings: Settings, review: ReviewSettings) -> Iterator[RunningApp]:
    """The review app served by uvicorn on 127.0.0.1 in a thread of this process, and its metrics on a port of
    their own as `refund-batch review` serves them; both stopped afterwards."""
    port, metrics_port = distinct_free_ports(2)
    review = ReviewSettings(**{**vars(review), "host": "127.0.0.1", "port": port})
    app = build(settings, review)
    metrics, _ = start_http_server(metrics_port, review.host, registry=app.state.metrics)
    server = uvicorn.Server(uvicorn.Config(app, **server_options(review)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the review app did not start")
        time.sleep(0.05)
    try:
        yield RunningApp(f"http://127.0.0.1:{review.port}", f"http://127.0.0.1:{metrics.server_port}", settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        metrics.shutdown()


def utc(year: int, month: int, day: int, hour: int = 2) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)
