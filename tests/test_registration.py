"""Registration never stops a night: objects of 2 GiB and more, keys longer than any column, two runs
registering the same objects at once (SQLite and a real PostgreSQL 15, a real folder store)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import obstore
import pytest
from batch_job.ledger.results import Ledger, Verdict
from batch_job.ledger.schema import FAILED, NEEDS_REVIEW, OK, PENDING
from batch_job.settings import Settings
from sqlalchemy import create_engine, text

from common.objectstore import StoredObject, open_store
from tests.images import encode, product_image
from tests.test_batch_job import DAY, REPO, put_photos, run_once, wait_until
from tests.test_exactly_once import fake_torchserve, prediction

MOMENT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def folder_settings(tmp_path: Path, database_url: str, torchserve_url: str, **overrides) -> Settings:
    values = {"store": str(tmp_path / "store"), "database_url": database_url, "torchserve_url": torchserve_url}
    return Settings(**{**values, "retries": 0, "migrate": True, **overrides})


def test_an_object_of_2_5_gb_fails_at_registration_and_the_photos_are_classified(database_url, tmp_path):
    """A phone video (a sparse 2.5 GB file) beside three photos: recorded as failed with its size by this
    night, never claimed nor read; the photos are classified, this night and the next one runs clean."""
    with fake_torchserve(lambda n, image: (200, prediction("v1"))) as url:
        settings = folder_settings(tmp_path, database_url, url)
        photos = put_photos(settings, 3, corrupt=False)
        video = Path(settings.store) / "inbox" / DAY / "video.jpg"
        with video.open("wb") as sparse:
            sparse.truncate(2_500_000_000)
        first = run_once(settings)
        second = run_once(settings)
    rows = {row.object_key: row for row in Ledger(settings.database_url).results()}
    big = rows[f"inbox/{DAY}/video.jpg"]
    assert (big.status, big.size, big.attempts, big.run_id) == (FAILED, 2_500_000_000, 0, first.run_id)
    assert big.error == f"object is 2500000000 bytes, more than the {settings.max_image_bytes} allowed"
    assert first.claimed == 3  # the video was never claimed, so never read
    assert all(rows[key].status in (OK, NEEDS_REVIEW) for key in photos)
    assert (second.registered, second.claimed) == (0, 0)


def deep_key(length: int) -> str:
    """An inbox key of `length` characters in folders a file system accepts (255 bytes a name at most)."""
    prefix = f"inbox/{DAY}/"
    head = prefix + "f" * 200 + "/" + "".join(["f" * 200 + "/"] * ((length - len(prefix) - 50) // 201 - 1))
    return head + "p" * (length - len(head) - len(".jpg")) + ".jpg"


def test_a_key_whose_destination_is_longer_than_1024_characters_is_recorded_and_routed(database_url, tmp_path):
    """A 1,020-character key goes to sorted/Discs/...: 1,027 characters. Recorded in the same commit as the
    photos beside it and copied there; nothing stays pending."""
    key = deep_key(1020)
    with fake_torchserve(lambda n, image: (200, prediction("v1"))) as url:
        settings = folder_settings(tmp_path, database_url, url, route="copy")
        photos = put_photos(settings, 3, corrupt=False)
        obstore.put(open_store(settings.store), key, encode(product_image("Discs", 1)))
        stats = run_once(settings)
    destination = key.replace("inbox/", "sorted/Discs/", 1)
    assert len(destination) == 1027
    rows = {row.object_key: row for row in Ledger(settings.database_url).results()}
    assert (rows[key].status, rows[key].route_to) == (OK, destination) and rows[key].routed_at is not None
    assert (Path(settings.store) / destination).is_file()
    assert stats.claimed == 4 and all(rows[k].status in (OK, NEEDS_REVIEW) for k in photos)


def test_a_key_too_long_for_the_unique_index_is_left_out_and_the_others_register(database_url):
    """PostgreSQL's B-tree index holds at most ~2,700 bytes an entry; a longer key (possible in a folder store)
    is refused on its own, with a warning, and the other objects of the page register. 2,048 bytes fit."""
    ledger = Ledger(database_url)
    too_long = StoredObject(deep_key(3000), 10, MOMENT, "e-long")
    longest = StoredObject(deep_key(2048), 10, MOMENT, "e-longest")
    short = StoredObject(f"inbox/{DAY}/a.jpg", 10, MOMENT, "e-short")
    assert ledger.register([short, too_long, longest]) == 2
    assert sorted(row.object_key for row in ledger.results()) == sorted([short.key, longest.key])


def answered_by_another_night(connection, keys: list[str]) -> None:
    """What a run that registered `keys` and already recorded their answers left: rows under model v1."""
    for key in keys:
        connection.execute(
            text(
                "INSERT INTO results (object_key, identity, model_version, size, last_modified, status, attempts,"
                " created_at, finished_at) VALUES (:key, 'e', 'v1', 10, :moment, 'ok', 1, :moment, :moment)"
            ),
            {"key": key, "moment": MOMENT},
        )


REGISTER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from batch_job.ledger.results import Ledger
    from common.objectstore import StoredObject
    url, count = sys.argv[1], int(sys.argv[2])
    ledger = Ledger(url)
    objects = [StoredObject(f"inbox/2026-11-23/{i}.jpg", 10, datetime(2026, 11, 23, tzinfo=UTC), "e")
               for i in range(count)]
    print("ready", flush=True)
    sys.stdin.readline()
    print(ledger.register(objects), flush=True)
    """
)


def registering(url: str, count: int) -> subprocess.Popen:
    """A process that registers `count` objects when told to go (a line on its stdin)."""
    process = subprocess.Popen(
        [sys.executable, "-c", REGISTER, url, str(count)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "ready\n", process.stderr.read()
    return process


def test_a_registration_racing_a_night_that_answered_the_same_objects_adds_no_second_row(postgres_url):
    """Run B reads which objects are known, then run A registers and answers them (model v1), then B inserts.
    The unique key is the object version, whatever model answered: B adds nothing, and no later commit of
    a second row's answer can fail on the key."""
    Ledger(postgres_url)  # at head before anyone waits
    keys = [f"inbox/2026-11-23/{i}.jpg" for i in range(50)]
    engine = create_engine(postgres_url)
    with engine.connect() as night_a:
        transaction = night_a.begin()
        night_a.execute(text("LOCK TABLE results IN SHARE ROW EXCLUSIVE MODE"))  # reads pass, inserts wait
        run_b = registering(postgres_url, len(keys))
        run_b.stdin.write("go\n")
        run_b.stdin.flush()
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'results'::regclass"
        with engine.connect() as observer:
            wait_until(lambda: observer.execute(text(waiting)).scalar() == 1, 30, "run B's insert waits")
        answered_by_another_night(night_a, keys)
        transaction.commit()
    out, err = run_b.communicate(timeout=60)
    assert run_b.returncode == 0, err
    assert out.strip() == "0"
    rows = Ledger(postgres_url).results()
    assert len(rows) == len(keys) and {row.model_version for row in rows} == {"v1"}
    engine.dispose()


def test_two_processes_registering_the_same_5000_objects_at_once_make_5000_rows(database_url):
    Ledger(database_url)  # at head before both start
    runs = [registering(database_url, 5000) for _ in range(2)]
    for run in runs:
        run.stdin.write("go\n")
        run.stdin.flush()
    answers = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in answers]
    assert sum(int(out) for out, _ in answers) == 5000  # each object counted new by exactly one run
    assert Ledger(database_url).count_rows() == 5000


@pytest.mark.parametrize("limit", [None, 1_000_000])
def test_registration_records_sizes_beyond_32_bits(database_url, limit):
    """The ledger alone: a 5 GB object is stored with its size; with a limit it is failed at once, with none
    it waits to be claimed like any other."""
    ledger = Ledger(database_url)
    video = StoredObject(f"inbox/{DAY}/video.mp4", 5_000_000_000, MOMENT, "e-video")
    assert ledger.register([video], max_bytes=limit, run_id="night") == 1
    (row,) = ledger.results()
    assert row.size == 5_000_000_000
    assert row.status == (PENDING if limit is None else FAILED)
    assert ledger.claimable() == ([(row.id, video.key)] if limit is None else [])


def test_an_answer_whose_route_is_longer_than_1024_characters_commits_with_its_batch(database_url):
    """record() on its own: the long route and an ordinary one in one transaction."""
    ledger = Ledger(database_url)
    long_key, short_key = deep_key(1020), f"inbox/{DAY}/a.jpg"
    ledger.register([StoredObject(key, 10, MOMENT, "e") for key in (long_key, short_key)])
    rows = ledger.claim([i for i, _ in ledger.claimable()], "night", timedelta(minutes=5))
    answers = [
        (
            row,
            Verdict(
                OK,
                category="Discs",
                probability=0.9,
                counts_as_attempt=True,
                route_to="sorted/Discs/" + row.object_key[6:],
            ),
        )
        for row in rows
    ]
    assert len(ledger.record(answers, "night", 3)) == 2
    assert sorted(len(row.route_to) for row in ledger.unrouted()) == [len(short_key) + 7, 1027]


def test_a_night_over_known_objects_inserts_nothing_and_burns_no_id(postgres_url):
    """Every night lists the whole inbox: the known keys are looked up, not inserted. A PostgreSQL insert that
    ends in ON CONFLICT DO NOTHING still takes a value of the int4 id sequence, which a store of a million
    photos listed every night would run out of within a few years."""
    ledger = Ledger(postgres_url)
    objects = [StoredObject(f"inbox/{DAY}/{i}.jpg", 10, MOMENT, f"e{i}") for i in range(1000)]
    assert ledger.register(objects) == 1000
    for _ in range(3):
        assert ledger.register(objects) == 0
    assert ledger.register([StoredObject(f"inbox/{DAY}/late.jpg", 10, MOMENT, "e-late")]) == 1
    assert max(row.id for row in ledger.results()) == 1001
