"""The nightly job at scale: a bucket holding 100,000 earlier photos and 5,000 new ones.

Prints, for a local folder and for an S3 server (SeaweedFS on loopback): how long the
incremental listing takes next to a full listing, the end-to-end rate of the night, and
that rate against the served throughput of the same TorchServe (target >= 0.9).

    python -m tests.benchmarks.bench_nightly [--existing 100000] [--new 5000] [--backends folder s3]
"""

from __future__ import annotations

import argparse
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
from batch_job.ledger import Ledger
from batch_job.night import nightly
from batch_job.settings import Settings
from batch_job.store import list_inbox, listing_start

from common.objectstore import list_objects, open_store
from handlers import serve
from tests.ports import free_ports
from tests.servers import s3_server

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared/datasets/returns-photos-sample/images"
TODAY = date(2026, 11, 23)
CONCURRENCY = 32


def put_many(store, items: list[tuple[str, bytes]], threads: int = 32) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: obstore.put(store, *item), items))
    return time.monotonic() - started


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


def bench(name: str, location: str, ports: serve.Ports, workdir: Path, existing: int, new: int) -> dict:
    store = open_store(location)
    history = [
        # Older than the lookback window: the ledger would hold them, the listing never sees them.
        (f"inbox/{TODAY - timedelta(days=3 + i % 365)}/old-{i}.jpg", b"an image classified long ago")
        for i in range(existing)
    ]
    fill_seconds = put_many(store, history)
    photos = [path.read_bytes() for path in sorted(SAMPLE.glob("*.jpg"))]
    fresh = [(f"inbox/{TODAY}/{i}.jpg", data) for i, data in enumerate(islice(cycle(photos), new))]
    put_many(store, fresh)

    settings = Settings(
        store=location,
        database_url=f"sqlite:///{workdir / f'{name}.db'}",
        torchserve_url=ports.inference_url,
        concurrency=CONCURRENCY,
    )
    ledger = Ledger(settings.database_url)
    ledger.start_run("history", "0/1", "-")  # the nights before: their newest partition is yesterday
    ledger.finish_run("history", TODAY - timedelta(days=1), {})

    since = listing_start(ledger.newest_finished_partition("0/1"), settings.lookback_days)
    started = time.monotonic()
    incremental = sum(1 for _ in list_inbox(store, settings.inbox_prefix, since))
    incremental_seconds = time.monotonic() - started
    started = time.monotonic()
    everything = sum(1 for _ in list_objects(store, settings.inbox_prefix))
    full_seconds = time.monotonic() - started

    serving = served_rate(ports, [data for _, data in fresh])
    night = nightly(settings)
    end_to_end = len(night.rows) / night.stats.seconds
    return {
        "backend": name,
        "objects": everything,
        "fill_s": fill_seconds,
        "listed": incremental,
        "incremental_listing_s": incremental_seconds,
        "full_listing_s": full_seconds,
        "processed": len(night.rows),
        "statuses": night.summary["statuses"],
        "served_img_s": serving,
        "end_to_end_img_s": end_to_end,
        "ratio": end_to_end / serving,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, default=100_000, help="photos already in the bucket")
    parser.add_argument("--new", type=int, default=5_000, help="photos that arrived today")
    parser.add_argument("--backends", nargs="+", default=["folder", "s3"], choices=["folder", "s3"])
    parser.add_argument("--model-store", type=Path, default=Path("var/model-store"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-nightly-", dir=Path("var").resolve()))
    results = []
    with ExitStack() as stack:
        ports = free_ports()
        serve.start(args.model_store, workdir / "torchserve", ports)
        stack.callback(serve.stop, workdir / "torchserve")
        stack.callback(shutil.rmtree, workdir, True)
        for backend in args.backends:
            if backend == "folder":
                location = str(workdir / "store")
            else:
                server = stack.enter_context(s3_server())
                stack.enter_context(patch.dict(os.environ, server.env()))  # from_url reads AWS_* from it
                location = server.url()
            result = bench(backend, location, ports, workdir, args.existing, args.new)
            results.append(result)
            print(
                f"{backend:>6}: {result['objects']} objects (filled in {result['fill_s']:.0f}s); "
                f"incremental listing {result['listed']} in {result['incremental_listing_s']:.2f}s "
                f"vs full listing {result['full_listing_s']:.2f}s; night {result['processed']} images "
                f"{result['statuses']} at {result['end_to_end_img_s']:.1f} img/s; "
                f"served {result['served_img_s']:.1f} img/s; "
                f"end-to-end/served={result['ratio']:.2f}",
                flush=True,
            )
    print("end-to-end/served " + " ".join(f"{r['backend']}={r['ratio']:.2f}" for r in results))


if __name__ == "__main__":
    main()
