"""The night's listing of the inbox: every partition every night, a page at a time in flat memory, prefixes
however they are spelled, and keys the store client refuses set aside with their reason."""

from __future__ import annotations

import os
import tracemalloc
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from batch_job.ledger.results import Ledger
from batch_job.ledger.schema import FINAL
from batch_job.night import job
from batch_job.night.client import TorchServeClient
from batch_job.night.nightly import nightly
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from sqlalchemy import text

from common.objectstore import list_objects, open_store
from tests.s3_proxy import s3_proxy
from tests.test_batch_job import DAY, put_photos
from tests.test_exactly_once import fake_torchserve, local_settings, prediction, statuses

pytestmark = pytest.mark.integration


def answers_everything(n: int, image: bytes) -> tuple[int, bytes]:
    return 200, prediction("v1")


def peak_bytes_of_a_night_over(tmp_path: Path, url: str, objects: int) -> int:
    """Python's peak allocation during a night whose store holds `objects` photos, all classified before."""
    settings = local_settings(tmp_path / str(objects), url)
    for partition in range(10):  # empty files: the listing reads names and sizes, never bodies
        folder = Path(settings.store) / "inbox" / f"2025-01-{1 + partition:02}"
        folder.mkdir(parents=True)
        for i in range(partition, objects, 10):
            (folder / f"{i}.jpg").touch()
    ledger, store = Ledger(settings.database_url), open_store(settings.store)
    ledger.register(list_objects(store, "inbox/"))
    with ledger.engine.begin() as connection:  # what earlier nights left: every photo done
        connection.execute(text("UPDATE results SET status = 'ok'"))
    tracemalloc.start()
    try:
        night = job.run(settings, TorchServeClient(url, "refund-classifier", 1, 10.0, 0), ledger, store)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (night.listed, night.registered, night.claimed) == (objects, 0, 0)
    return peak


def test_a_night_lists_and_registers_in_memory_that_does_not_grow_with_the_store(tmp_path):
    """Four times the store, about the same peak: the listing is registered a page at a time and dropped."""
    with fake_torchserve(answers_everything) as url:
        small = peak_bytes_of_a_night_over(tmp_path, url, 2_500)
        large = peak_bytes_of_a_night_over(tmp_path, url, 10_000)
    assert large < 1.3 * small, (small, large)


@pytest.mark.parametrize("written", ["inbox", "/inbox", "inbox//"])
def test_an_inbox_prefix_without_its_slash_is_the_same_inbox(tmp_path, written):
    """REFUND_INBOX_PREFIX=inbox: partitions are still told apart (a future-dated folder is reported, the
    newest one recorded) exactly as with inbox/."""
    assert Settings(inbox_prefix=written, runs_prefix="nightly").inbox_prefix == "inbox/"
    assert Settings(runs_prefix="/nightly").runs_prefix == "nightly/"
    assert Settings(inbox_prefix="").inbox_prefix == ""  # the store's top is the inbox
    assert ReviewSettings(thumbnails_prefix="thumbs").thumbnails_prefix == "thumbs/"
    with fake_torchserve(answers_everything) as url:
        settings = local_settings(tmp_path, url, inbox_prefix=written)
        put_photos(settings, 2, corrupt=False)
        put_photos(settings, 1, day="2099-01-01", corrupt=False)
        night = nightly(settings)
    assert night.stats.future_partitions == ["2099-01-01"]
    assert night.stats.newest_partition == datetime.fromisoformat(DAY).date()
    assert night.summary["listing"]["future_partitions"] == ["2099-01-01"]


def test_a_file_name_the_store_client_refuses_is_reported_and_the_night_goes_on(tmp_path):
    """A folder store: a file whose name is no UTF-8 (copied from an old Windows share) among the photos of
    its day. It is named in the summary with the client's reason; every other photo, in its folder and
    the others, is classified."""
    with fake_torchserve(answers_everything) as url:
        settings = local_settings(tmp_path, url)
        keys = put_photos(settings, 12, corrupt=False) + put_photos(settings, 3, day="2026-11-24", corrupt=False)
        day = os.fsencode(Path(settings.store) / "inbox" / DAY)
        Path(os.fsdecode(day + b"/caf\xe9.jpg")).write_bytes(b"latin-1 name")
        night = nightly(settings)
    assert sorted(statuses(settings)) == sorted(keys)
    assert all(status in FINAL for status in statuses(settings).values())  # each answered once
    (error,) = night.summary["listing"]["errors"]
    assert error["prefix"] == f"inbox/{DAY}/" and "caf%E9.jpg" in error["error"] and "non-unicode" in error["error"]


def test_a_key_the_store_client_refuses_on_s3_is_reported_and_the_other_partitions_are_classified(
    s3_env, tmp_path, monkeypatch
):
    """S3 holds keys obstore refuses (`inbox/<day>//x.jpg`: an empty segment). SeaweedFS collapses `//` and
    refuses `.`/`..` itself, so a proxy puts such a key into the server's listing answer, as AWS S3 would
    send it. The client drops that listing page whole, so the rest of that partition waits until the key is
    renamed; the summary names the key and why, and the other partitions are classified."""
    with fake_torchserve(answers_everything) as url:
        settings = replace(local_settings(tmp_path, url), store=s3_env.url())
        (bad, *same_page) = put_photos(settings, 3, corrupt=False)
        others = put_photos(settings, 2, day="2026-11-24", corrupt=False)
        broken = bad.replace(f"{DAY}/", f"{DAY}//").encode()

        def empty_segment(method: str, path: str, body: bytes) -> bytes:
            return body.replace(f"<Key>{bad}</Key>".encode(), b"<Key>" + broken + b"</Key>")

        with s3_proxy(s3_env, rewrite=empty_segment) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            night = nightly(settings)
    assert sorted(statuses(settings)) == sorted(others)
    assert all(status in FINAL for status in statuses(settings).values())  # each answered once
    (error,) = night.summary["listing"]["errors"]
    assert error["prefix"] == f"inbox/{DAY}/" and broken.decode() in error["error"] and "empty" in error["error"]
    assert all(key not in statuses(settings) for key in same_page)  # on the refused page: listed once it is renamed
