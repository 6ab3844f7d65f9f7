"""Nothing lost, nothing twice: each fault a review found in the nightly job, reproduced with real
processes and servers (TorchServe, a real HTTP server that misbehaves, the stores), then fixed."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import obstore
import pytest
from batch_job.__main__ import main
from batch_job.ledger.results import Ledger, Verdict
from batch_job.ledger.schema import DEAD, FAILED, NEEDS_REVIEW, OK, PENDING
from batch_job.night import classify
from batch_job.night.client import TorchServeClient
from batch_job.settings import Settings
from obstore.store import S3Store
from sqlalchemy import text

from common.objectstore import StoredObject, list_objects, open_store
from common.sorting import SortingRule
from tests.images import encode, product_image
from tests.s3_proxy import s3_proxy
from tests.test_batch_job import DAY, cli, put_photos, run_once, wait_until

pytestmark = pytest.mark.integration
TODAY = datetime.now(UTC).date()


def statuses(settings: Settings) -> dict[str, str]:
    return {row.object_key: row.status for row in Ledger(settings.database_url).results()}


def published_summary(settings: Settings, run_id: str) -> dict:
    store = open_store(settings.store)
    return json.loads(bytes(obstore.get(store, f"runs/{run_id}/summary.json").bytes()))


# -- partitions -------------------------------------------------------------------------------


def test_a_future_dated_photo_does_not_hide_the_photos_of_later_nights(backend, torchserve, tmp_path):
    settings = backend(torchserve)
    photo = tmp_path / "one.jpg"
    photo.write_bytes(encode(product_image("Discs", 1)))
    assert main(["ingest", str(photo), "--store", settings.store, "--date", "2099-01-01"]) == 0
    first = run_once(settings)
    assert first.registered == 1 and first.future_partitions == ["2099-01-01"]

    keys = put_photos(settings, 5, day=TODAY.isoformat(), corrupt=False)
    second = run_once(settings)
    assert (second.listed, second.registered) == (6, 5)  # the future photo is listed again, not classified again
    assert published_summary(settings, second.run_id)["listing"]["future_partitions"] == ["2099-01-01"]
    assert all(statuses(settings)[key] in (OK, NEEDS_REVIEW) for key in keys)


def test_a_folder_named_like_an_impossible_date_neither_crashes_the_night_nor_is_skipped(backend, torchserve):
    settings = backend(torchserve)
    odd = put_photos(settings, 2, day="2026-02-30", corrupt=False)
    good = put_photos(settings, 2, corrupt=False)
    done = cli(settings)
    assert done.returncode == 0, done.stderr
    assert "folders named like dates that are none" in done.stderr and "2026-02-30" in done.stderr
    assert all(statuses(settings)[key] in (OK, NEEDS_REVIEW) for key in odd + good)
    again = run_once(settings)  # the odd folder is listed every night (it has no date to fall behind)
    assert (again.listed, again.registered, again.malformed_partitions) == (4, 0, ["2026-02-30"])


def test_a_late_photo_in_an_old_partition_is_classified_the_next_night(backend, torchserve):
    """Every partition is listed every night: a photo put into a folder of weeks ago after a night ran
    is found by the next night, beside the new day's photos."""
    settings = backend(torchserve)
    put_photos(settings, 2, day="2026-11-01", corrupt=False)
    put_photos(settings, 2, day="2026-11-20", corrupt=False)
    assert run_once(settings).registered == 4
    late = "inbox/2026-11-01/late.jpg"
    obstore.put(open_store(settings.store), late, encode(product_image("Discs", 1)))
    (today,) = put_photos(settings, 1, day="2026-11-21", corrupt=False)
    night = run_once(settings)
    assert (night.listed, night.registered) == (6, 2)
    assert statuses(settings)[late] in (OK, NEEDS_REVIEW) and statuses(settings)[today] in (OK, NEEDS_REVIEW)


# -- model changes ----------------------------------------------------------------------------


def test_pending_rows_of_an_earlier_model_are_classified_by_the_model_served_now(backend, torchserve):
    """A night under model v-old was interrupted; the next night serves another version."""
    settings = backend(torchserve)
    keys = put_photos(settings, 3, corrupt=False)
    ledger = Ledger(settings.database_url)
    objects = [obj for obj in _listed(settings) if obj.key in keys]
    with ledger.engine.begin() as connection:  # what the code before the fix registered
        for obj in objects:
            connection.execute(
                text(
                    "INSERT INTO results (object_key, identity, model_version, size, last_modified, status,"
                    " attempts, created_at) VALUES (:key, :identity, 'v-old', :size, :modified, 'pending', 0, :now)"
                ),
                {
                    "key": obj.key,
                    "identity": obj.identity,
                    "size": obj.size,
                    "modified": obj.last_modified,
                    "now": datetime.now(UTC),
                },
            )
    stats = run_once(settings)
    assert (stats.registered, stats.claimed) == (0, 3)  # no second row per photo, and none stranded
    rows = Ledger(settings.database_url).results()
    assert len(rows) == 3
    assert all(row.status in (OK, NEEDS_REVIEW) and row.model_version == stats.model.version for row in rows)


def _listed(settings: Settings) -> list[StoredObject]:
    return list(list_objects(open_store(settings.store), settings.inbox_prefix))


# -- a TorchServe that misbehaves -------------------------------------------------------------


Respond = Callable[[int, bytes], tuple[int, bytes]]  # the n-th classification request, its image -> (status, body)


@contextmanager
def fake_torchserve(respond: Respond) -> Iterator[str]:
    """A real HTTP server on loopback that describes itself like our handler and answers
    classification requests as `respond` says."""
    counter = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            image = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("describe") == "True":
                status, body = (
                    200,
                    json.dumps(
                        {"model": {"name": "refund-classifier", "version": "v1"}, "classes": ["Boxes", "Discs"]}
                    ).encode(),
                )
            else:
                with lock:
                    counter["n"] += 1
                    n = counter["n"]
                status, body = respond(n, image)
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped waiting (its read timeout) before this late answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def prediction(version: str, category: str = "Discs", probability: float = 0.9) -> bytes:
    return json.dumps(
        {
            "category": category,
            "probability": probability,
            "top_k": [{"category": category, "probability": probability}],
            "probabilities": {category: probability},
            "model": {"name": "refund-classifier", "version": version},
        }
    ).encode()


def local_settings(tmp_path: Path, url: str, **overrides) -> Settings:
    """A folder store and SQLite: these tests are about TorchServe's answers, which no store changes."""
    store, database_url = str(tmp_path / "store"), f"sqlite:///{tmp_path / 'results.db'}"
    values = {"store": store, "database_url": database_url, "torchserve_url": url, "retries": 0, "concurrency": 1}
    return Settings(**{**values, **overrides})


def test_malformed_200_answers_fail_their_images_and_lose_nothing(tmp_path):
    """Bad JSON and a missing field: those images stay pending (one attempt each); the rest are recorded."""
    malformed = {3: b"{not json", 6: json.dumps({"category": "Discs"}).encode()}

    def respond(n: int, image: bytes) -> tuple[int, bytes]:
        return 200, malformed.get(n, prediction("v1"))

    with fake_torchserve(respond) as url:
        settings = local_settings(tmp_path, url)
        keys = put_photos(settings, 8, corrupt=False)
        stats = run_once(settings)
    rows = Ledger(settings.database_url).results()
    assert sorted(row.object_key for row in rows) == sorted(keys)
    assert stats.statuses == {OK: 6, PENDING: 2}
    left = [row for row in rows if row.status == PENDING]
    assert len(left) == 2 and all(row.attempts == 1 and "200 with no prediction" in row.error for row in left)


def test_answers_record_the_model_version_that_gave_them(tmp_path):
    """A rolling update mid-night: the first answers come from v1, the later ones from v2."""
    with fake_torchserve(lambda n, image: (200, prediction("v1" if n <= 3 else "v2"))) as url:
        settings = local_settings(tmp_path, url)
        put_photos(settings, 6, corrupt=False)
        stats = run_once(settings)
    versions = [row.model_version for row in sorted(Ledger(settings.database_url).results(), key=lambda r: r.id)]
    assert sorted(versions) == ["v1"] * 3 + ["v2"] * 3
    assert stats.answered_by == {"v1": 3, "v2": 3}


def test_whose_fault_a_failure_is_follows_from_the_answer(tmp_path):
    """413 with an empty body and 400 fail the image with a reason; 503 counts as an attempt until the
    image is dead-lettered; nothing answering counts nothing."""
    answers = {1: (413, b""), 2: (400, json.dumps({"error": "not an image", "code": 400}).encode())}
    with fake_torchserve(lambda n, image: answers.get(n, (503, b'{"message": "worker died"}'))) as url:
        settings = local_settings(tmp_path, url, max_attempts=2)
        keys = put_photos(settings, 3, corrupt=False)
        run_once(settings)
        run_once(settings)
    rows = {row.object_key: row for row in Ledger(settings.database_url).results()}
    rejected = [rows[key] for key in keys if rows[key].status == FAILED]
    assert sorted(row.error for row in rejected) == [
        "rejected (400): not an image",
        "rejected (413): Request Entity Too Large",
    ]
    (dead,) = [rows[key] for key in keys if rows[key].status == DEAD]
    assert dead.attempts == 2 and "gave up after 2 attempts" in dead.error and "503" in dead.error

    nobody = local_settings(tmp_path, "http://127.0.0.1:9", max_attempts=1)  # discard port: nothing listens
    assert (
        main(
            [
                "run",
                "--store",
                nobody.store,
                "--database-url",
                nobody.database_url,
                "--torchserve-url",
                nobody.torchserve_url,
                "--retries",
                "0",
            ]
        )
        == 2
    )


def test_a_photo_that_hangs_or_crashes_the_handler_is_dead_after_max_attempts_nights_the_others_are_done(tmp_path):
    """One photo the handler never answers in time (the client's read timeout), one it answers 500 for: each is
    sent once a night (no retry inside the request), charged one attempt per night and dead after
    `max_attempts` nights; the other photos are classified the first night."""
    hangs, crashes = b"\xff\xd8 hangs the handler", b"\xff\xd8 crashes the handler"
    sent: Counter[bytes] = Counter()

    def respond(n: int, image: bytes) -> tuple[int, bytes]:
        sent[image] += 1
        if image == hangs:
            time.sleep(5)  # long after the client stopped waiting
        if image == crashes:
            return 500, b'{"message": "Worker died."}'
        return 200, prediction("v1")

    with fake_torchserve(respond) as url:
        settings = local_settings(tmp_path, url, retries=4, request_timeout=3, max_attempts=3, concurrency=2)
        keys = put_photos(settings, 4, corrupt=False)
        store = open_store(settings.store)
        obstore.put(store, f"inbox/{DAY}/hangs.jpg", hangs)
        obstore.put(store, f"inbox/{DAY}/crashes.jpg", crashes)
        first = run_once(settings)
        assert first.statuses[PENDING] == 2 and first.statuses[OK] == 4
        for _ in range(2):
            run_once(settings)
    rows = {row.object_key: row for row in Ledger(settings.database_url).results()}
    assert all(rows[key].status == OK and rows[key].attempts == 1 for key in keys)
    hung, crashed = rows[f"inbox/{DAY}/hangs.jpg"], rows[f"inbox/{DAY}/crashes.jpg"]
    assert (hung.status, hung.attempts, crashed.status, crashed.attempts) == (DEAD, 3, DEAD, 3)
    assert "no answer within 3 s" in hung.error and "answered 500" in crashed.error
    assert (sent[hangs], sent[crashes]) == (3, 3)  # once a night each


def test_a_413_from_the_real_torchserve_frontend_has_a_reason(tmp_path, torchserve):
    settings = local_settings(tmp_path, torchserve.inference_url, max_image_bytes=64 * 1024 * 1024)
    key = f"inbox/{DAY}/huge.jpg"
    obstore.put(open_store(settings.store), key, b"\xff\xd8" + b"\0" * (17 * 1024 * 1024))
    run_once(settings)
    (row,) = Ledger(settings.database_url).results()
    assert (
        row.status == FAILED and row.error.startswith("rejected (413): ") and len(row.error) > len("rejected (413): ")
    )


def test_an_object_listed_above_the_size_limit_fails_and_is_never_read(s3_env, torchserve, tmp_path, monkeypatch):
    """The listing says it is too big: failed with its size, and the store never gets a GET for it."""
    settings = Settings(
        store=s3_env.url(),
        database_url=f"sqlite:///{tmp_path / 'results.db'}",
        torchserve_url=torchserve.inference_url,
        max_image_bytes=1_000_000,
    )
    huge = f"inbox/{DAY}/huge.jpg"
    obstore.put(s3_env.store(), huge, b"\xff\xd8" + b"\0" * 2_000_000)
    keys = put_photos(settings, 2, corrupt=False)
    with s3_proxy(s3_env) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        run_once(settings)
    rows = {row.object_key: row for row in Ledger(settings.database_url).results()}
    assert rows[huge].status == FAILED and "2000002 bytes, more than the 1000000 allowed" in rows[huge].error
    assert rows[huge].latency_ms is None  # never sent to TorchServe
    assert all(rows[key].status in (OK, NEEDS_REVIEW) for key in keys)
    assert all(proxy.count("GET", key) >= 1 for key in keys)  # the photos were read through the proxy...
    assert proxy.count("GET", huge) == 0  # ...and the big one not at all


def test_an_object_bigger_when_read_than_when_listed_fails_with_its_size(s3_env, tmp_path):
    """Listed small, replaced by a bigger upload before the night reads it: the size the store reports with
    the GET is checked before the body is taken, and the image fails with that size, never sent."""
    store = s3_env.store()
    key = f"inbox/{DAY}/grew.jpg"
    obstore.put(store, key, encode(product_image("Discs", 1)))
    ledger = Ledger(f"sqlite:///{tmp_path / 'results.db'}")
    ledger.register(list_objects(store, "inbox/"))
    obstore.put(store, key, b"\xff\xd8" + b"\0" * 2_000_000)
    (row,) = ledger.claim([i for i, _ in ledger.claimable()], "night", timedelta(minutes=5))
    assert row.size < 1_000_000  # what the listing said
    client = TorchServeClient("http://127.0.0.1:9", "refund-classifier", 1, 1.0, 0)  # nothing listens: never asked
    settings = local_settings(tmp_path, "http://127.0.0.1:9", max_image_bytes=1_000_000)
    with s3_proxy(s3_env) as proxy:
        outcome = classify.process(
            replace(s3_env, endpoint=proxy.endpoint).store(), client, settings, SortingRule.single(0.5), row
        )
    client.close()
    assert (outcome.status, outcome.error) == (
        FAILED,
        "object is 2000002 bytes, more than the 1000000 allowed (--max-image-bytes)",
    )
    assert proxy.count("GET", key) == 1 and outcome.latency_ms is None  # the one GET, then no request to TorchServe


# -- routing ----------------------------------------------------------------------------------


def test_a_routing_failure_neither_stops_the_night_nor_loses_an_original_and_is_retried(tmp_path, torchserve):
    """The store refuses the review/ folder (a file sits where it should be); --route move."""
    store = tmp_path / "store"
    settings = Settings(
        store=str(store),
        database_url=f"sqlite:///{tmp_path / 'results.db'}",
        torchserve_url=torchserve.inference_url,
        route="move",
        review_threshold="1.01",  # every image goes to review/
    )
    keys = put_photos(settings, 3, corrupt=False)
    (store / "review").write_bytes(b"in the way")
    first = cli(settings)
    assert first.returncode == 0, first.stderr
    assert "routing failed" in first.stderr
    assert all((store / key).is_file() for key in keys)  # originals kept: no copy, no delete
    rows = Ledger(settings.database_url).results()
    assert all(row.status == NEEDS_REVIEW and row.route_to and row.routed_at is None for row in rows)

    (store / "review").unlink()
    second = cli(settings)
    assert second.returncode == 0, second.stderr
    assert not any((store / key).exists() for key in keys)
    assert all((store / key.replace("inbox/", "review/")).is_file() for key in keys)
    rows = Ledger(settings.database_url).results()
    assert all(row.routed_at is not None and row.attempts == 1 for row in rows)  # routed, not classified again


def test_a_class_that_cannot_name_a_folder_sends_its_photo_to_review_never_to_a_nested_or_outer_folder(tmp_path):
    """The model answers a class with a slash, or "..", for two photos: the night neither nests them under sorted/
    nor lets them escape it, and goes on; they wait in review/ with the reason, for a reviewer to sort (the
    review page refuses such a class as a decision by the same rule)."""
    odd = {b"\xff\xd8 a shirt": "Tops/Shirts", b"\xff\xd8 a dot": ".."}

    def respond(n: int, image: bytes) -> tuple[int, bytes]:
        return 200, prediction("v1", odd.get(image, "Discs"))

    with fake_torchserve(respond) as url:
        settings = local_settings(tmp_path, url, route="move")
        keys = put_photos(settings, 2, corrupt=False)
        store = open_store(settings.store)
        for name, image in zip(("shirt.jpg", "dot.jpg"), odd, strict=True):
            obstore.put(store, f"inbox/{DAY}/{name}", image)
        stats = run_once(settings)
    assert stats.statuses == {OK: 2, NEEDS_REVIEW: 2} and stats.routing_failures == {}
    rows = {row.object_key: row for row in Ledger(settings.database_url).results()}
    for name, category in (("shirt.jpg", "Tops/Shirts"), ("dot.jpg", "..")):
        row = rows[f"inbox/{DAY}/{name}"]
        assert (row.status, row.category, row.route_to) == (NEEDS_REVIEW, category, f"review/{DAY}/{name}")
        assert f"{category!r} cannot name a folder" in row.error
    placed = sorted(obj["path"] for page in obstore.list(store) for obj in page if not obj["path"].startswith("runs/"))
    sorted_keys = [key.replace("inbox/", "sorted/Discs/") for key in keys]
    assert placed == sorted([f"review/{DAY}/dot.jpg", f"review/{DAY}/shirt.jpg", *sorted_keys])


def test_move_keeps_the_original_when_the_copy_lands_short_and_moves_it_the_next_night(
    s3_env, torchserve, tmp_path, monkeypatch
):
    """--route move on S3: a store that acknowledges each copy but holds a short one (the proxy overwrites
    it) keeps every original; the next night, with a sound store, moves them whole."""
    upstream = s3_env.store()

    def copy_lands_short(method: str, key: str, headers: dict[str, str]) -> None:
        if method == "PUT" and "x-amz-copy-source" in {name.lower() for name in headers}:
            obstore.put(upstream, key, b"short")

    settings = Settings(
        store=s3_env.url(),
        database_url=f"sqlite:///{tmp_path / 'results.db'}",
        torchserve_url=torchserve.inference_url,
        route="move",
        review_threshold="1.01",  # every image goes to review/
    )
    keys = put_photos(settings, 3, corrupt=False)
    photos = {key: bytes(obstore.get(upstream, key).bytes()) for key in keys}
    with s3_proxy(s3_env, after=copy_lands_short) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        first = run_once(settings)
    assert all(proxy.count("PUT", key.replace("inbox/", "review/")) >= 1 for key in keys)  # each copy was made
    assert sorted(first.routing_failures) == sorted(keys)
    assert all("has 5 bytes" in error and "original kept" in error for error in first.routing_failures.values())
    assert {key: bytes(obstore.get(upstream, key).bytes()) for key in keys} == photos  # no original deleted
    assert all(row.routed_at is None for row in Ledger(settings.database_url).results())

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    second = run_once(settings)
    assert second.routing_failures == {} and second.claimed == 0  # routed, not classified again
    assert {key: bytes(obstore.get(upstream, key.replace("inbox/", "review/")).bytes()) for key in keys} == photos
    assert [obj for page in obstore.list(upstream, prefix="inbox/") for obj in page] == []
    assert all(row.routed_at is not None for row in Ledger(settings.database_url).results())


def test_a_night_routes_only_what_it_committed_not_an_answer_whose_lease_another_night_took_over(tmp_path):
    """Night A's TorchServe answers `Boxes` only after A's lease has expired and night B (answering `Discs`)
    has committed and routed the photo: A commits nothing and copies nothing; the photo is in B's folder only."""
    asked, release = threading.Event(), threading.Event()

    def late_boxes(n: int, image: bytes) -> tuple[int, bytes]:
        asked.set()
        release.wait(60)
        return 200, prediction("v1", "Boxes")

    with (
        fake_torchserve(late_boxes) as slow_url,
        fake_torchserve(lambda n, image: (200, prediction("v1", "Discs"))) as fast_url,
        ThreadPoolExecutor(1) as pool,
    ):
        slow_settings = local_settings(tmp_path, slow_url, route="copy", lease_seconds=1, request_timeout=120)
        (key,) = put_photos(slow_settings, 1, corrupt=False)
        slow_night = pool.submit(run_once, slow_settings)
        assert asked.wait(60)
        ledger = Ledger(slow_settings.database_url)
        wait_until(lambda: ledger.claimable() != [], 30, "night A's lease expires")
        fast = run_once(Settings(**{**vars(slow_settings), "torchserve_url": fast_url}))
        release.set()
        slow = slow_night.result(timeout=60)
    assert (slow.lost_leases, sum(slow.statuses.values()), slow.routing_failures) == (1, 0, {})
    (row,) = ledger.results()
    assert (row.run_id, row.category, row.route_to) == (fast.run_id, "Discs", key.replace("inbox/", "sorted/Discs/"))
    assert row.routed_at is not None
    store = open_store(slow_settings.store)
    assert [obj["path"] for page in obstore.list(store, prefix="sorted/") for obj in page] == [row.route_to]


def test_a_result_whose_lease_was_taken_over_is_not_committed_nor_routed(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'results.db'}")
    ledger.register([StoredObject("inbox/a.jpg", 1, datetime(2026, 11, 23, tzinfo=UTC), "e")])
    (slow,) = ledger.claim([i for i, _ in ledger.claimable()], "slow-run", timedelta(seconds=-1))  # lease over
    (fast,) = ledger.claim([i for i, _ in ledger.claimable()], "fast-run", timedelta(minutes=5))
    answer = Verdict(OK, category="Discs", probability=0.9, counts_as_attempt=True, route_to="sorted/Discs/a.jpg")
    assert ledger.record([(slow, answer)], "slow-run", 3) == []  # nothing to route
    assert ledger.unrouted() == []
    assert [row.id for row in ledger.record([(fast, answer)], "fast-run", 3)] == [fast.id]
    (row,) = ledger.results()
    assert (row.run_id, row.attempts, row.route_to) == ("fast-run", 1, "sorted/Discs/a.jpg")


def test_a_store_that_fails_reading_leaves_the_image_pending_without_an_attempt(tmp_path):
    """An S3 endpoint that refuses connections (nothing listens on the discard port), asked once."""
    store = S3Store(
        "bucket",
        endpoint="http://127.0.0.1:9",
        access_key_id="x",
        secret_access_key="y",
        region="us-east-1",
        client_options={"allow_http": True},
        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1)},
    )
    ledger = Ledger(f"sqlite:///{tmp_path / 'results.db'}")
    ledger.register([StoredObject(f"inbox/{DAY}/1.jpg", 10, datetime(2026, 11, 23, tzinfo=UTC), "e")])
    (row,) = ledger.claim([i for i, _ in ledger.claimable()], "night", timedelta(minutes=5))
    client = TorchServeClient("http://127.0.0.1:9", "refund-classifier", 1, 1.0, 0)
    outcome = classify.process(
        store, client, local_settings(tmp_path, "http://127.0.0.1:9"), SortingRule.single(0.5), row
    )
    client.close()
    assert outcome.status == PENDING and outcome.error.startswith("could not read from store")
    ledger.record([(row, outcome)], "night", max_attempts=1)
    (row,) = ledger.results()
    assert (row.status, row.attempts) == (PENDING, 0)  # not the image's fault: never dead-lettered for it
