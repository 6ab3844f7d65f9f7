"""SIGTERM mid-night, as Kubernetes sends it (Job deadline, node drain, a deleted pod): the real CLI in its own
process, a real HTTP stand-in for TorchServe, the real ledgers (SQLite, PostgreSQL)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from batch_job.ledger.results import Ledger
from batch_job.ledger.schema import FINAL, PENDING, Result
from sqlalchemy import select

from tests.test_batch_job import cli, put_photos, wait_for_results
from tests.test_exactly_once import fake_torchserve, prediction

pytestmark = pytest.mark.integration
PHOTOS = 200
ANSWER_S = 0.1  # per request: 200 photos at concurrency 4 take 5 s, so the signal lands mid-night


def test_sigterm_mid_night_records_every_answer_releases_the_rest_and_the_next_night_finishes(backend):
    answered = []
    lock = threading.Lock()

    def respond(n: int, image: bytes) -> tuple[int, bytes]:
        time.sleep(ANSWER_S)
        with lock:
            answered.append(n)
        return 200, prediction("v1")

    with fake_torchserve(respond) as url:
        # The default 15-minute lease: only a release lets the next night take what the stopped one held.
        settings = backend(None, torchserve_url=url, concurrency=4, retries=0)
        keys = put_photos(settings, PHOTOS, corrupt=False)
        night = cli(settings, wait=False)
        wait_for_results(settings, 64)  # one commit done, most photos to go
        night.send_signal(signal.SIGTERM)
        _, stderr = night.communicate(timeout=60)
        assert night.returncode == 128 + signal.SIGTERM, stderr
        assert "stopped by SIGTERM" in stderr, stderr

        rows = Ledger(settings.database_url).results()
        classified = [row for row in rows if row.status in FINAL]
        pending = [row for row in rows if row.status == PENDING]
        assert len(classified) == len(answered), "every answer TorchServe gave was recorded"
        assert PHOTOS // 3 < len(classified) < PHOTOS and len(classified) + len(pending) == PHOTOS
        assert all(row.attempts == 0 for row in pending), "a photo never answered is charged no attempt"
        with Ledger(settings.database_url).engine.connect() as connection:
            leased = connection.scalars(select(Result.object_key).where(Result.lease_until.is_not(None))).all()
        assert leased == [], "the stopped night released its claims"

        following = cli(settings)
        assert following.returncode == 0, following.stderr
    rows = Ledger(settings.database_url).results()
    assert sorted(row.object_key for row in rows) == sorted(keys)
    assert all(row.status in FINAL and row.attempts == 1 for row in rows)
    assert len(answered) == PHOTOS, "no photo was sent twice"
