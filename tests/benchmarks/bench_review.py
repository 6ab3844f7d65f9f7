"""The review page with a long queue: 10,000 doubtful items waiting.

Prints the queue page's p50/p95 (50 cards a page), thumbnails made on first view and served from the
store after, and the time to decide 100 items through the page (as review.js posts them), on
SQLite + a folder and, with --backends postgresql+s3, on PostgreSQL 15 + an S3 server (loopback).

Then the page under real use: --reviewers reviewers load pages and decide at once while --thumbnails
thumbnails of large photos are made for the first time; /healthz is probed all along. Prints /healthz's and
the queue page's p50/p95 then (target: /healthz p95 under 100 ms). Bounded: at most --seconds seconds.

    python -m tests.benchmarks.bench_review [--waiting 10000] [--requests 50] [--decide 100] [--backends ...]
        [--reviewers 5] [--thumbnails 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import httpx
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings

from tests.review_support import CLASSES, PASSWORDS, Doubtful, classes_file, guesses, review_app, seed_night, users_file
from tests.review_support import utc as night_at
from tests.servers import postgres_server, s3_server

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ITEM = re.compile(r'data-item="(\d+)"')


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def seed(settings: Settings, waiting: int) -> float:
    """`waiting` doubtful items over 7 nights, through the real ledger; returns the seconds it took."""
    started = time.monotonic()
    nights = 7
    for night in range(nights):
        count = waiting // nights + (1 if night < waiting % nights else 0)
        items = [Doubtful(f"{night}-{n}.jpg", guesses(n)) for n in range(count)]
        seed_night(settings, night_at(2026, 11, 24) + timedelta(days=night), items, photo_size=(60, 80))
    return time.monotonic() - started


def measure(settings: Settings, workdir: Path, requests: int, decide: int) -> dict:
    review = ReviewSettings(users_file=str(users_file(workdir)), classes=str(classes_file(workdir, CLASSES)))
    figures = {}
    with review_app(settings, review) as app, httpx.Client(base_url=app.url, timeout=60) as client:
        token = CSRF.search(client.get("/login").text).group(1)
        client.post("/login", data={"csrf": token, "username": "alice", "password": PASSWORDS["alice"]})
        page = client.get("/")
        token = CSRF.search(page.text).group(1)
        timings = []
        for index in range(requests):
            query = ["/", "/?night=2026-11-30", f"/?page={index % 20 + 1}"][index % 3]
            started = time.perf_counter()
            assert client.get(query).status_code == 200
            timings.append(time.perf_counter() - started)
        figures["page_p50_ms"], figures["page_p95_ms"] = (1000 * percentile(timings, s) for s in (0.5, 0.95))

        items = [int(item) for item in ITEM.findall(page.text)]
        made, again = [], []
        for item in items:
            for bucket in (made, again):
                started = time.perf_counter()
                assert client.get(f"/photo/{item}").status_code == 200
                bucket.append(time.perf_counter() - started)
        figures["thumbnail_first_ms"] = 1000 * statistics.median(made)
        figures["thumbnail_stored_ms"] = 1000 * statistics.median(again)

        started, decided = time.perf_counter(), 0
        while decided < decide:
            page = client.get("/")  # the reviewer's next page of cards
            for item in [int(item) for item in ITEM.findall(page.text)][: decide - decided]:
                answer = client.post(
                    f"/decide/{item}", data={"final": CLASSES[item % 3], "csrf": token}, headers={"x-review-fetch": "1"}
                )
                assert answer.status_code == 200, answer.text
                decided += 1
        figures["decide_seconds"] = time.perf_counter() - started
    return figures


def under_load(settings: Settings, workdir: Path, reviewers: int, thumbnails: int, seconds: float) -> dict:
    """Reviewers at work while first-time thumbnails of large photos are made; /healthz probed meanwhile."""
    large = [Doubtful(f"large-{n}.jpg", guesses(n)) for n in range(thumbnails)]
    photos = seed_night(settings, night_at(2026, 12, 2), large, photo_size=(3000, 4000))
    review = ReviewSettings(users_file=str(users_file(workdir)), classes=str(classes_file(workdir, CLASSES)))
    health, pages, deadline, done = [], [], time.monotonic() + seconds, threading.Event()
    with review_app(settings, review) as app:

        def reviewer(index: int) -> None:
            name = sorted(PASSWORDS)[index % len(PASSWORDS)]
            with httpx.Client(base_url=app.url, timeout=60) as client:
                token = CSRF.search(client.get("/login").text).group(1)
                client.post("/login", data={"csrf": token, "username": name, "password": PASSWORDS[name]})
                while not done.is_set() and time.monotonic() < deadline:
                    started = time.perf_counter()
                    page = client.get("/?night=2026-11-30")
                    pages.append(time.perf_counter() - started)
                    token = CSRF.search(page.text).group(1)
                    items = ITEM.findall(page.text)
                    if not items:
                        break
                    item = items[index % len(items)]
                    client.post(f"/decide/{item}", data={"final": CLASSES[0], "csrf": token})

        def thumbnailer(part: list[int]) -> None:
            with httpx.Client(base_url=app.url, timeout=120) as client:
                token = CSRF.search(client.get("/login").text).group(1)
                client.post("/login", data={"csrf": token, "username": "alice", "password": PASSWORDS["alice"]})
                for item in part:
                    if time.monotonic() > deadline:
                        break
                    assert client.get(f"/photo/{item}").status_code == 200

        def prober() -> None:
            with httpx.Client(base_url=app.url, timeout=30) as client:
                while not done.is_set() and time.monotonic() < deadline:
                    started = time.perf_counter()
                    assert client.get("/healthz").text == "ok"
                    health.append(time.perf_counter() - started)
                    time.sleep(0.05)

        started = time.monotonic()
        with ThreadPoolExecutor(reviewers + 3) as pool:
            work = [pool.submit(reviewer, index) for index in range(reviewers)] + [pool.submit(prober)]
            # A page's photos, as a browser asks for them: two at a time.
            for future in [pool.submit(thumbnailer, photos[start::2]) for start in (0, 1)]:
                future.result()
            done.set()
            for future in work:
                future.result()
        took = time.monotonic() - started
    return {
        "health_p50_ms": 1000 * percentile(health, 0.5),
        "health_p95_ms": 1000 * percentile(health, 0.95),
        "page_p50_ms": 1000 * percentile(pages, 0.5),
        "page_p95_ms": 1000 * percentile(pages, 0.95),
        "probes": len(health),
        "pages": len(pages),
        "seconds": took,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50, help="queue page loads to time")
    parser.add_argument("--decide", type=int, default=100)
    parser.add_argument("--backends", nargs="+", default=["sqlite+folder"], choices=["sqlite+folder", "postgresql+s3"])
    parser.add_argument("--reviewers", type=int, default=5, help="reviewers at work at once under load")
    parser.add_argument(
        "--thumbnails", type=int, default=50, help="first-time thumbnails of 3000x4000 photos meanwhile"
    )
    parser.add_argument("--seconds", type=float, default=60, help="the most the load part may take")
    args = parser.parse_args(argv)
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as workdir, ExitStack() as stack:
            folder = Path(workdir)
            if backend == "sqlite+folder":
                store, database_url = str(folder / "store"), f"sqlite:///{folder / 'results.db'}"
            else:
                database_url = stack.enter_context(postgres_server())
                s3 = stack.enter_context(s3_server())
                os.environ.update(s3.env())
                store = s3.url()
            settings = Settings(store=store, database_url=database_url, route="move")
            seeded = seed(settings, args.waiting)
            figures = measure(settings, folder, args.requests, args.decide)
            load = under_load(settings, folder, args.reviewers, args.thumbnails, args.seconds)
        print(
            f"{backend}: {args.waiting} waiting (seeded in {seeded:.0f} s); queue page of 50 cards "
            f"p50 {figures['page_p50_ms']:.0f} ms, p95 {figures['page_p95_ms']:.0f} ms over {args.requests} loads; "
            f"thumbnail {figures['thumbnail_first_ms']:.0f} ms first, {figures['thumbnail_stored_ms']:.0f} ms stored; "
            f"{args.decide} decisions through the page in {figures['decide_seconds']:.1f} s "
            f"({1000 * figures['decide_seconds'] / args.decide:.0f} ms each)"
        )
        print(
            f"{backend} under load: {args.reviewers} reviewers deciding while {args.thumbnails} thumbnails of "
            f"3000x4000 photos are made for the first time ({load['seconds']:.0f} s): /healthz "
            f"p50 {load['health_p50_ms']:.0f} ms, p95 {load['health_p95_ms']:.0f} ms over {load['probes']} probes; "
            f"queue page p50 {load['page_p50_ms']:.0f} ms, p95 {load['page_p95_ms']:.0f} ms over {load['pages']} loads"
        )


if __name__ == "__main__":
    main()
