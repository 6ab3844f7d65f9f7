"""The nightly job as the store grows: 10 k / 100 k / 1 M photos classified on earlier nights plus 5,000 new.

Every night lists every partition (late photos in old ones are found the next night) and registers it a
page at a time. For a local folder and an S3 server (SeaweedFS on loopback) this prints, per size: the
night's listing time, its registration time, and the peak RSS of the process doing them (a process of its
own per size). Targets: peak RSS within 1.2x from the smallest size to the largest; listing + registration of
5,000 new among 1 M old under 2 minutes.

The earlier photos are empty objects (the listing reads names and sizes, never bodies), written in parallel,
and their ledger rows are seeded as done; the new ones are the sample photos. With --night, a whole night on
TorchServe follows over the largest store: its end-to-end rate against the served throughput of the same
TorchServe (target >= 0.9); use it with a small size.

    python -m tests.benchmarks.bench_nightly [--sizes 10000 100000 1000000] [--new 5000]
        [--backends folder s3] [--ledger sqlite|postgresql] [--night]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date, timedelta
from itertools import cycle, islice
from pathlib import Path
from unittest.mock import patch

import httpx
import obstore
from batch_job.ledger.results import Ledger
from batch_job.night import job
from batch_job.night.listing import register_listing
from batch_job.night.nightly import nightly
from batch_job.night.stats import RunStats
from batch_job.settings import Settings
from sqlalchemy import text

from common.objectstore import list_objects, open_store
from handlers import serve
from tests.ports import free_ports
from tests.servers import postgres_server, s3_server

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared/datasets/returns-photos-sample/images"
TODAY = date(2026, 11, 23)
DAYS = 365  # the earlier photos spread over a year of partitions
CONCURRENCY = 32
WRITERS = 64  # parallel writes filling the store
FILL_BATCH = 10_000


def old_key(i: int) -> str:
    return f"inbox/{TODAY - timedelta(days=1 + i % DAYS)}/old-{i}.jpg"


def fill(store, location: str, keys: range, backend: str) -> float:
    """Empty objects under keys, written in parallel; seconds taken."""
    started = time.monotonic()
    if backend == "folder":  # the folder store is a folder: files made directly, without the client's atomic put
        root = Path(location)

        def write(i: int) -> None:
            path = root / old_key(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    else:

        def write(i: int) -> None:
            obstore.put(store, old_key(i), b"")

    with ThreadPoolExecutor(WRITERS) as pool:
        for start in range(keys.start, keys.stop, FILL_BATCH):  # map() submits all it is given: bounded batches
            for _ in pool.map(write, range(start, min(start + FILL_BATCH, keys.stop))):
                pass
    return time.monotonic() - started


def peak_rss_mib() -> float:
    """This process's own peak RSS. Not getrusage's ru_maxrss: Linux carries it across fork and exec, so a
    spawned child would report the parent's peak (the bench's, which grows with the store it fills)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def mark_done(ledger: Ledger) -> None:
    """What the earlier nights left: every registered photo classified."""
    with ledger.engine.begin() as connection:
        connection.execute(text("UPDATE results SET status = 'ok', model_version = 'v-old' WHERE status = 'pending'"))


def listing_and_registration(settings: Settings) -> dict:
    """A night's listing and registration in this (fresh) process: its timings and this process's peak RSS."""
    ledger, store = Ledger(settings.database_url), open_store(settings.store)
    stats = RunStats(job.new_run_id(0), "0/1", None, None)  # no model answers here: nothing is classified
    started = time.monotonic()
    register_listing(store, settings, ledger, stats)
    todo = len(ledger.claimable())
    return {
        "listed": stats.listed,
        "new": stats.registered,
        "todo": todo,
        "listing_s": stats.listing_seconds,
        "registration_s": stats.registration_seconds,
        "total_s": time.monotonic() - started,
        "peak_rss_mib": peak_rss_mib(),
        "errors": len(stats.listing_errors),
    }


def scale(backend: str, location: str, database_url: str, sizes: list[int], new: int) -> list[dict]:
    store, ledger = open_store(location), Ledger(database_url)
    settings = Settings(store=location, database_url=database_url)
    photos = [path.read_bytes() for path in sorted(SAMPLE.glob("*.jpg"))] or [b"\xff\xd8 not a photo"]
    rows, done = [], 0
    spawn = multiprocessing.get_context("spawn")  # a process of its own per size: its peak RSS is the night's
    for size in sizes:
        fill_seconds = fill(store, location, range(done, size), backend)
        started = time.monotonic()
        ledger.register(obj for obj in list_objects(store, "inbox/") if "/old-" in obj.key)
        mark_done(ledger)
        seed_seconds = time.monotonic() - started
        done = size
        fresh = [(f"inbox/{TODAY}/new-{size}-{i}.jpg", data) for i, data in enumerate(islice(cycle(photos), new))]
        with ThreadPoolExecutor(WRITERS) as pool:
            list(pool.map(lambda item: obstore.put(store, *item), fresh))
        with spawn.Pool(1) as pool:
            night = pool.apply(listing_and_registration, (settings,))
        assert (night["listed"], night["new"], night["todo"], night["errors"]) == (size + new, new, new, 0), night
        with ledger.engine.begin() as connection:  # the next size's new photos are new again; these count as old
            connection.execute(text("DELETE FROM results WHERE status = 'pending'"))
        for key, _ in fresh:
            obstore.delete(store, key)
        rows.append({"backend": backend, "old": size, "fill_s": fill_seconds, "seed_s": seed_seconds, **night})
        print(
            f"{backend:>6} {size:>9,} old + {new:,} new: listing {night['listing_s']:6.1f} s, "
            f"registration {night['registration_s']:6.1f} s, peak RSS {night['peak_rss_mib']:6.1f} MiB "
            f"(store filled in {fill_seconds:.0f} s, ledger seeded in {seed_seconds:.0f} s)",
            flush=True,
        )
    return rows


def served_rate(ports: serve.Ports, photos: list[bytes]) -> float:
    """Images per second TorchServe answers with CONCURRENCY requests in flight, no store, no ledger."""
    url = f"{ports.inference_url}/predictions/{serve.MODEL_NAME}"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    with httpx.Client(timeout=60, limits=limits) as client, ThreadPoolExecutor(CONCURRENCY) as pool:
        started = time.monotonic()
        statuses = list(pool.map(lambda data: client.post(url, content=data).status_code, photos))
        seconds = time.monotonic() - started
    assert set(statuses) == {200}, set(statuses)
    return len(photos) / seconds


def whole_night(location: str, database_url: str, ports: serve.Ports, new: int) -> str:
    """A night on TorchServe over the store as the scale table left it, with `new` sample photos."""
    store = open_store(location)
    photos = [path.read_bytes() for path in sorted(SAMPLE.glob("*.jpg"))]
    fresh = [(f"inbox/{TODAY}/{i}.jpg", data) for i, data in enumerate(islice(cycle(photos), new))]
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda item: obstore.put(store, *item), fresh))
    serving = served_rate(ports, [data for _, data in fresh])
    settings = Settings(
        store=location, database_url=database_url, torchserve_url=ports.inference_url, concurrency=CONCURRENCY
    )
    night = nightly(settings)
    end_to_end = len(night.rows) / night.stats.seconds
    return (
        f"night {len(night.rows)} images {night.summary['statuses']} in {night.stats.seconds:.0f} s "
        f"at {end_to_end:.1f} img/s; served {serving:.1f} img/s; end-to-end/served={end_to_end / serving:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="old photos")
    parser.add_argument("--new", type=int, default=5_000, help="photos that arrived today")
    parser.add_argument("--backends", nargs="+", default=["folder", "s3"], choices=["folder", "s3"])
    parser.add_argument("--ledger", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--night", action="store_true", help="then a whole night on TorchServe over that store")
    parser.add_argument("--model-store", type=Path, default=Path("var/model-store"))
    args = parser.parse_args()
    sizes = sorted(args.sizes)

    workdir = Path(tempfile.mkdtemp(prefix="bench-nightly-", dir=Path("var").resolve()))
    rows, nights = [], []
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        for backend in args.backends:
            if args.ledger == "postgresql":
                database_url = stack.enter_context(postgres_server(database=f"bench_{backend}"))
            else:
                database_url = f"sqlite:///{workdir / f'{backend}.db'}"
            if backend == "folder":
                location = str(workdir / "store")
            else:
                server = stack.enter_context(s3_server())
                stack.enter_context(patch.dict(os.environ, server.env()))  # from_url reads AWS_* from it
                location = server.url()
            rows += scale(backend, location, database_url, sizes, args.new)
            if args.night:
                ports = free_ports()
                serve.start(args.model_store, workdir / f"torchserve-{backend}", ports)
                try:
                    nights.append(f"{backend}: {whole_night(location, database_url, ports, args.new)}")
                finally:
                    serve.stop(workdir / f"torchserve-{backend}")
    print(f"\n| store | old photos | listing | registration | peak RSS | ({args.ledger}, +{args.new:,} new)")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['backend']} | {row['old']:,} | {row['listing_s']:.1f} s | {row['registration_s']:.1f} s "
            f"| {row['peak_rss_mib']:.0f} MiB |"
        )
    for backend in args.backends:
        mine = [row for row in rows if row["backend"] == backend]
        if len(mine) > 1:
            print(f"{backend}: peak RSS {mine[-1]['peak_rss_mib'] / mine[0]['peak_rss_mib']:.2f}x from the smallest")
    print(*nights, sep="\n")


if __name__ == "__main__":
    main()
