"""The nightly job against a real TorchServe, real stores (folder, S3) and real ledgers (SQLite, PostgreSQL)."""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import obstore
import pytest
from batch_job.__main__ import main
from batch_job.ledger.results import Ledger, Verdict
from batch_job.ledger.schema import DEAD, FAILED, FINAL, NEEDS_REVIEW, OK, PENDING
from batch_job.night.listing import shard_of
from batch_job.night.nightly import nightly
from batch_job.night.stats import RunStats
from batch_job.settings import Settings

from common.objectstore import StoredObject, open_store
from common.sorting import rule_of
from handlers import serve
from tests.images import SHAPES, encode, product_image
from tests.ports import free_ports

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent
DAY = "2026-11-23"


def put_photos(settings: Settings, count: int, day: str = DAY, corrupt: bool = True, size=(300, 400)) -> list[str]:
    store = open_store(settings.store)
    keys = []
    for i in range(count):
        fmt = "PNG" if i % 4 == 0 else "JPEG"
        key = f"inbox/{day}/{500 + i}.{fmt.lower()}"
        obstore.put(store, key, encode(product_image(list(SHAPES)[i % 3], 200 + i, size=size), fmt))
        keys.append(key)
    if corrupt:
        obstore.put(store, f"inbox/{day}/999.jpg", b"\xff\xd8\xff\xe0 truncated upload")
        obstore.put(store, f"inbox/{day}/.DS_Store", b"finder noise")
        keys.append(f"inbox/{day}/999.jpg")
    return keys


def run_once(settings: Settings) -> RunStats:
    return nightly(settings).stats


def cli(settings: Settings, *extra: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    """The real CLI in its own process, configured through REFUND_* variables as a CronJob would."""
    env = {**os.environ, **{f"REFUND_{key.upper()}": str(value) for key, value in vars(settings).items()}}
    command = [sys.executable, "-m", "batch_job", "run", *extra]
    if wait:
        return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_rows(settings: Settings) -> list:
    return [row for row in Ledger(settings.database_url).results() if row.status in FINAL]


def inference_requests(ports: serve.Ports) -> int:
    """How many inference requests this TorchServe has counted (its Prometheus metrics endpoint)."""
    text = httpx.get(f"http://127.0.0.1:{ports.metrics}/metrics", timeout=10).text
    found = re.search(r'^ts_inference_requests_total\{model_name="refund-classifier".*\} ([0-9.]+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; raise if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def wait_for_results(settings: Settings, count: int, timeout: float = 120) -> None:
    """Until a running night has committed `count` results: the moment to interrupt it."""
    wait_until(lambda: len(final_rows(settings)) >= count, timeout, f"{count} results committed")


def test_nightly_run_records_everything_once(backend, torchserve, classes):
    settings = backend(torchserve)
    put_photos(settings, 12)
    first = run_once(settings)
    assert (first.listed, first.registered, first.claimed) == (13, 13, 13)  # the hidden file is no photo
    rows = Ledger(settings.database_url).results()
    assert len(rows) == 13
    failed = [row for row in rows if row.status == FAILED]
    assert [row.object_key for row in failed] == [f"inbox/{DAY}/999.jpg"]
    assert "415" in failed[0].error and "cannot decode" in failed[0].error
    for row in rows:
        assert row.status in FINAL and row.attempts == 1 and row.run_id == first.run_id
        assert row.size > 0 and row.last_modified is not None and row.identity
        assert row.finished_at >= row.claimed_at and row.latency_ms > 0
        if row.status != FAILED:
            assert row.category in classes and 0 < row.probability <= 1
            assert len(row.top3) == 3 and row.top3[0]["category"] == row.category
            assert row.model_name == "refund-classifier" and row.model_version == first.model.version  # who answered

    second = run_once(settings)
    assert (second.listed, second.registered, second.claimed) == (13, 0, 0)
    assert Ledger(settings.database_url).count_rows() == 13


def test_a_replaced_photo_is_classified_again(backend, torchserve):
    settings = backend(torchserve)
    put_photos(settings, 2, corrupt=False)
    run_once(settings)
    obstore.put(open_store(settings.store), f"inbox/{DAY}/500.png", encode(product_image("Boxes", 300), "PNG"))
    assert run_once(settings).registered == 1


def test_review_threshold_comes_from_the_model(backend, torchserve, trained_model):
    """The model's sorting rule (model.json's `sorting`, as the handler describes it) decides: an article type
    where its class's threshold is met, else a level above it, else review (tests/test_level_routing.py)."""
    settings = backend(torchserve)
    put_photos(settings, 6, corrupt=False)
    night = nightly(settings)
    shipped = json.loads((trained_model / "model.json").read_text())
    rule = rule_of(shipped)
    assert night.stats.model.rule == rule and night.stats.review_threshold is None  # "auto"
    assert night.summary["review_threshold"] == shipped["review_threshold"] == rule.threshold
    for row in Ledger(settings.database_url).results():
        article_type_certain = row.probability >= rule.class_threshold(row.category)
        if row.status == OK and row.sort_level == "article":
            assert article_type_certain and row.sorted_as == row.category
        elif row.status == OK:
            groups = {rule.group(category, row.sort_level) for category in rule.tree}
            assert not article_type_certain and tuple(row.sorted_as.split("/")) in groups
        else:
            assert row.status == NEEDS_REVIEW and not article_type_certain and row.sort_level is None


def test_report_manifest_and_routing_are_published_in_the_store(backend, torchserve):
    settings = backend(torchserve, route="copy", review_threshold="1.01")  # every image goes to review/
    keys = put_photos(settings, 4)
    done = cli(settings)
    assert done.returncode == 1, done.stderr  # 1 corrupt of 5 exceeds the 5 % failure budget
    store = open_store(settings.store)
    folder = next(iter(obstore.list_with_delimiter(store, "runs")["common_prefixes"]))
    summary = json.loads(bytes(obstore.get(store, f"{folder}/summary.json").bytes()))
    assert summary["processed"] == 5 and summary["statuses"] == {NEEDS_REVIEW: 4, FAILED: 1}
    assert summary["failures"][0]["key"] == keys[-1] and sum(summary["confidence_histogram"]) == 4
    manifest = bytes(obstore.get(store, f"{folder}/manifest.jsonl").bytes()).decode().splitlines()
    assert sorted(json.loads(line)["key"] for line in manifest) == sorted(keys)
    html = bytes(obstore.get(store, f"{folder}/report.html").bytes()).decode()
    assert html.count("data:image/jpeg;base64") == 4 and "truncated" not in html.split("Failures")[0]
    assert "999.jpg" in html.split("Failures")[1]
    reviewed = [meta["path"] for page in obstore.list(store, prefix="review/") for meta in page]
    assert sorted(reviewed) == sorted(key.replace("inbox/", "review/") for key in keys[:-1])


def test_torchserve_down_at_start_claims_nothing(backend):
    settings = backend(None, retries=0)
    put_photos(settings, 2)
    assert (
        main(
            [
                "run",
                "--store",
                settings.store,
                "--database-url",
                settings.database_url,
                "--torchserve-url",
                settings.torchserve_url,
                "--retries",
                "0",
            ]
        )
        == 2
    )
    assert Ledger(settings.database_url).count_rows() == 0


def test_failed_server_attempts_are_dead_lettered(tmp_path):
    """An image TorchServe keeps failing on (5xx) is given up after max_attempts runs, not retried forever."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    obj = StoredObject("inbox/x.jpg", 10, datetime(2026, 11, 23, tzinfo=UTC), "etag")
    ledger.register([obj])
    for attempt in range(1, 4):
        (row,) = ledger.claim([row_id for row_id, _ in ledger.claimable()], f"run{attempt}", timedelta(minutes=5))
        ledger.record(
            [(row, Verdict(PENDING, error="TorchServe answered 503", counts_as_attempt=True))], f"run{attempt}", 3
        )
    (row,) = ledger.results()
    assert row.status == DEAD and row.attempts == 3 and "gave up after 3 attempts" in row.error
    assert ledger.claimable() == []


def test_unreachable_server_never_dead_letters(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.register([StoredObject("inbox/y.jpg", 1, datetime(2026, 11, 23, tzinfo=UTC), None)])
    for attempt in range(5):
        (row,) = ledger.claim([i for i, _ in ledger.claimable()], f"r{attempt}", timedelta(minutes=5))
        ledger.record([(row, Verdict(PENDING, error="TorchServe unreachable"))], f"r{attempt}", 3)
    (row,) = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}").results()
    assert row.status == PENDING and row.attempts == 0  # five claims, no failure the image caused


def test_kill_9_mid_run_then_rerun_loses_nothing_and_repeats_nothing(backend, torchserve):
    settings = backend(torchserve, concurrency=2, lease_seconds=3)
    keys = put_photos(settings, 150, corrupt=False, size=(600, 800))
    requests_before = inference_requests(torchserve)
    victim = cli(settings, wait=False)
    wait_for_results(settings, 20)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    ledger = Ledger(settings.database_url)
    interrupted = ledger.results()
    assert sum(row.status in FINAL for row in interrupted) >= 20  # killed mid-night: after commits, before the end
    pending = sum(row.status == PENDING for row in interrupted)
    assert pending > 0, "the kill came too late to interrupt anything"
    # Claimed by the victim and not committed: sent at most once each, maybe not at all.
    in_flight = sum(row.status == PENDING and row.run_id is not None for row in interrupted)

    wait_until(lambda: len(ledger.claimable()) == pending, settings.lease_seconds + 30, "the dead run's claims expire")
    rerun = cli(settings)
    assert rerun.returncode == 0, rerun.stderr
    rows = Ledger(settings.database_url).results()
    assert sorted(row.object_key for row in rows) == sorted(keys)  # exactly one row per image
    assert all(row.status in (OK, NEEDS_REVIEW) and row.attempts == 1 for row in rows)  # a kill is no attempt
    inferred = inference_requests(torchserve) - requests_before - 2  # one describe per run
    assert len(keys) <= inferred <= len(keys) + in_flight, (inferred, in_flight)


def test_two_runs_started_together_never_process_an_image_twice(backend, torchserve):
    settings = backend(torchserve, concurrency=4)
    # Large photos: the night outlasts the gap between the two processes' starts, so both find work.
    keys = put_photos(settings, 120, corrupt=False, size=(600, 800))
    requests_before = inference_requests(torchserve)
    runs = [cli(settings, wait=False) for _ in range(2)]
    for process in runs:
        process.wait(timeout=300)
        assert process.returncode == 0, process.stderr.read()
    rows = Ledger(settings.database_url).results()
    assert sorted(row.object_key for row in rows) == sorted(keys)
    assert all(row.status in FINAL and row.attempts == 1 for row in rows)  # claimed once, sent once
    assert inference_requests(torchserve) - requests_before == len(keys) + 2  # and TorchServe saw each once
    # They ran at once: both committed results, and each claimed work before the other's last result.
    by_run = {run_id: [row for row in rows if row.run_id == run_id] for run_id in {row.run_id for row in rows}}
    assert len(by_run) == 2
    first, second = by_run.values()
    assert min(row.claimed_at for row in first) < max(row.finished_at for row in second)
    assert min(row.claimed_at for row in second) < max(row.finished_at for row in first)


def test_shards_split_the_work_between_processes(backend, torchserve):
    settings = backend(torchserve, shard_count=3, concurrency=4)
    keys = put_photos(settings, 45, corrupt=False)
    shards = []
    for index in range(3):
        env = {**os.environ, "JOB_COMPLETION_INDEX": str(index)}
        shard_settings = {f"REFUND_{k.upper()}": str(v) for k, v in vars(settings).items() if k != "shard_index"}
        shards.append(
            subprocess.Popen(
                [sys.executable, "-m", "batch_job", "run"],
                env={**env, **shard_settings},
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for process in shards:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    rows = Ledger(settings.database_url).results()
    assert sorted(row.object_key for row in rows) == sorted(keys)
    for row in rows:
        assert row.attempts == 1 and row.run_id.endswith(f"-s{shard_of(row.object_key, 3)}")
    assert len({row.run_id for row in rows}) == 3


def test_torchserve_stopping_mid_run_leaves_images_pending_until_it_is_back(backend, model_store, tmp_path):
    run_dir = tmp_path / "ts"
    ports = serve.start(model_store, run_dir, free_ports())
    try:
        settings = backend(ports, concurrency=2, retries=1)
        keys = put_photos(settings, 120, corrupt=False, size=(600, 800))
        night = cli(settings, wait=False)
        wait_for_results(settings, 10)
        serve.stop(run_dir)
        assert night.wait(timeout=300) == 1  # what could not be sent exceeds the failure budget
        left = Counter(row.status for row in Ledger(settings.database_url).results())
        assert left[PENDING] > 0 and left[DEAD] == 0 and left[FAILED] == 0

        serve.start(model_store, run_dir, ports)
        morning = cli(settings)
        assert morning.returncode == 0, morning.stderr
        rows = Ledger(settings.database_url).results()
        assert sorted(row.object_key for row in rows) == sorted(keys)
        # An outage is not the images' fault: each was answered once, and the restarted TorchServe
        # was asked only for what the night left pending (plus the morning's describe).
        assert all(row.status in (OK, NEEDS_REVIEW) and row.attempts == 1 for row in rows)
        assert inference_requests(ports) == left[PENDING] + 1
    finally:
        serve.stop(run_dir)


def test_lock_keeps_a_second_copy_from_running(backend, torchserve, tmp_path):
    settings = backend(torchserve)
    put_photos(settings, 2, corrupt=False)
    lock = tmp_path / "night.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        skipped = cli(settings, "--lock-file", str(lock))
    assert skipped.returncode == 0 and "holds the lock" in skipped.stderr
    assert Ledger(settings.database_url).count_rows() == 0
    assert cli(settings, "--lock-file", str(lock)).returncode == 0
    assert Ledger(settings.database_url).count_rows() == 2


def test_ingest_stores_photos_by_day_and_refuses_non_images(tmp_path):
    desk = tmp_path / "desk"
    desk.mkdir()
    (desk / "101.jpg").write_bytes(encode(product_image("Discs", 1)))
    (desk / "102.png").write_bytes(encode(product_image("Boxes", 2), "PNG"))
    (desk / "notes.txt").write_text("customer says it does not fit")
    store = tmp_path / "store"
    assert main(["ingest", str(desk), "--store", str(store), "--date", "2026-11-23"]) == 1
    assert sorted(p.name for p in (store / "inbox" / "2026-11-23").iterdir()) == ["101.jpg", "102.png"]
    (desk / "101.jpg").write_bytes(encode(product_image("Wedges", 3)))  # another photo under a taken name
    assert main(["ingest", str(desk / "101.jpg"), "--store", str(store), "--date", "2026-11-23"]) == 0
    day = store / "inbox" / "2026-11-23"
    assert len(list(day.iterdir())) == 3
    stamps = {path.name: path.stat().st_mtime_ns for path in day.iterdir()}
    assert (
        main(["ingest", str(desk / "101.jpg"), str(desk / "102.png"), "--store", str(store), "--date", "2026-11-23"])
        == 0
    )
    assert {path.name: path.stat().st_mtime_ns for path in day.iterdir()} == stamps  # the same photos: untouched


def test_report_prints_accuracy_against_labels(backend, torchserve, tmp_path, capsys):
    settings = backend(torchserve)
    put_photos(settings, 6, corrupt=False)
    run_once(settings)
    labels = tmp_path / "styles.csv"
    labels.write_text("id,articleType\n" + "".join(f"{500 + i},{list(SHAPES)[i % 3]}\n" for i in range(6)))
    assert main(["report", "--database-url", settings.database_url, "--labels", str(labels)]) == 0
    assert "accuracy on 6 labelled images" in capsys.readouterr().out


def test_stable_shard_hash():
    assert shard_of("inbox/2026-11-23/500.jpg", 4) == shard_of("inbox/2026-11-23/500.jpg", 4)
    spread = Counter(shard_of(f"inbox/{date(2026, 11, 23)}/{i}.jpg", 4) for i in range(4000))
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 900


def test_shards_starting_together_on_a_fresh_database_all_get_their_tables(backend):
    """Every pod of an Indexed Job opens the ledger at once; racing CREATE TABLEs must not fail any."""
    database_url = backend(None).database_url
    barrier = threading.Barrier(6)

    def open_ledger() -> int:
        barrier.wait()
        return len(Ledger(database_url).results())

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(lambda _: open_ledger(), range(6))) == [0] * 6
