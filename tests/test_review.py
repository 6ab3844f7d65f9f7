"""The review app over real HTTP (uvicorn on loopback): access, CSRF, decisions and their race,
routing in the store, thumbnails, metrics, the schema revision, and export-labels.

Decisions run on both backends: SQLite + a folder, and PostgreSQL 15 + an S3 server."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import httpx
import obstore
import pytest
from alembic import command
from batch_job.__main__ import main
from batch_job.ledger import migrate
from batch_job.ledger.decided import review_stats
from batch_job.ledger.results import Ledger
from batch_job.ledger.routing import mark_routed
from batch_job.ledger.schema import NEEDS_REVIEW, REVIEWED, UNUSABLE, Result
from batch_job.logs import JsonFormatter
from batch_job.night import html_report, job
from batch_job.night.client import ServedModel
from batch_job.night.nightly import nightly
from batch_job.night.stats import RunStats
from batch_job.night.summary import summarize
from batch_job.photos.located import Photos
from batch_job.photos.objects import route_object
from batch_job.review import decisions
from batch_job.review.auth import Reviewers, hash_line
from batch_job.review.serve import build
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from sqlalchemy import create_engine, inspect, text

from common.objectstore import list_objects, open_store, put_object, read_object
from common.registry import Registry
from common.sorting import SortingRule
from tests.images import encode, product_image
from tests.ports import distinct_free_ports
from tests.review_support import (
    CLASSES,
    PASSWORDS,
    Doubtful,
    classes_file,
    guesses,
    review_app,
    seed_night,
    users_file,
    utc,
)
from tests.test_exactly_once import fake_torchserve, prediction

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ITEM = re.compile(r'data-item="(\d+)"')
NEXT = re.compile(r'href="/\?([^"]*)" rel="next"')


@pytest.fixture(params=["sqlite+folder", "postgresql+s3"])
def settings(request, tmp_path) -> Settings:
    if request.param == "sqlite+folder":
        return Settings(
            store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}", route="move"
        )
    store, database_url = request.getfixturevalue("s3_env").url(), request.getfixturevalue("postgres_url")
    Ledger(database_url)  # migrated, as the chart's hook does: the page only checks a server database's schema
    return Settings(store=store, database_url=database_url, route="move")


@pytest.fixture
def review(tmp_path) -> ReviewSettings:
    return ReviewSettings(users_file=str(users_file(tmp_path)), classes=str(classes_file(tmp_path, CLASSES)))


def log_in(client: httpx.Client, name: str) -> int:
    token = CSRF.search(client.get("/login").text).group(1)
    return client.post("/login", data={"csrf": token, "username": name, "password": PASSWORDS[name]}).status_code


def logged_in(url: str, name: str) -> tuple[httpx.Client, str]:
    """A client with a reviewer's session, and the CSRF token its forms carry."""
    client = httpx.Client(base_url=url, timeout=30)
    assert log_in(client, name) == 303
    return client, CSRF.search(client.get("/").text).group(1)


def keys(settings: Settings, prefix: str) -> list[str]:
    return sorted(obj.key for obj in list_objects(open_store(settings.store), prefix))


def test_everything_but_health_needs_a_login(settings, review):
    seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    with review_app(settings, review) as app, httpx.Client(base_url=app.url) as anonymous:
        for path in ("/", "/photo/1", "/?night=2026-12-01"):
            answer = anonymous.get(path)
            assert (answer.status_code, answer.headers["location"]) == (303, "/login")
        assert anonymous.post("/decide/1", data={"final": "Discs"}).status_code == 303
        assert anonymous.get("/healthz").text == "ok"
        assert anonymous.get("/readyz").status_code == 200
        token = CSRF.search(anonymous.get("/login").text).group(1)
        wrong = anonymous.post("/login", data={"csrf": token, "username": "alice", "password": "guess"})
        assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
        nobody = anonymous.post("/login", data={"csrf": token, "username": "mallory", "password": "x"})
        assert nobody.status_code == 401
        assert anonymous.get("/").status_code == 303
    assert Ledger(settings.database_url).results()[0].status == NEEDS_REVIEW


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(settings, review):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        assert client.post(f"/decide/{item}", data={"final": "Discs"}).status_code == 403
        assert client.post(f"/decide/{item}", data={"final": "Discs", "csrf": "forged"}).status_code == 403
        other, _ = logged_in(app.url, "bob")  # another session's token is no good either
        assert other.post(f"/decide/{item}", data={"final": "Discs", "csrf": token}).status_code == 403
        assert client.post("/logout").status_code == 403
        anonymous = httpx.Client(base_url=app.url)
        assert anonymous.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]}).status_code == 403
    [row] = Ledger(settings.database_url).results()
    assert (row.status, row.reviewed_by) == (NEEDS_REVIEW, None)
    assert keys(settings, "review/") == ["review/2026-12-01/a.jpg"]


class InlineCode(HTMLParser):
    """What a strict CSP (no 'unsafe-inline') would block in a page: event-handler and style attributes,
    <style> elements and <script> elements without a src; and the scripts the page loads."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self.scripts: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.blocked += [f"<{tag} {name}=...>" for name, _ in attrs if name.startswith("on") or name == "style"]
        if tag == "style":
            self.blocked.append("<style>")
        source = dict(attrs).get("src")
        if tag == "script" and source:
            self.scripts.append(source)
        elif tag == "script":
            self.blocked.append("<script> without src")


def test_pages_carry_a_strict_content_security_policy_and_no_inline_code(settings, review):
    first, second = seed_night(
        settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0)), Doubtful("b.jpg", guesses(1))]
    )
    with review_app(settings, review) as app:
        login = httpx.get(f"{app.url}/login")
        client, token = logged_in(app.url, "alice")
        queue = client.get("/")  # both cards: every form and button a reviewer sees
        fetch = {"x-review-fetch": "1"}  # the fragments review.js asks for
        fragment = client.post(f"/decide/{first}", data={"final": "Discs", "csrf": token}, headers=fetch)
        undone = client.post(f"/undo/{first}", data={"csrf": token}, headers=fetch)
        typo = client.post(f"/decide/{second}", data={"final": "ringz", "csrf": token}, headers=fetch)
        for item in (first, second):  # without JavaScript: a note
            client.post(f"/decide/{item}", data={"final": "Discs", "csrf": token})
        noted = client.get("/")
        nights = client.get("/nights")
    assert sorted(ITEM.findall(queue.text)) == sorted([str(first), str(second)])
    assert fragment.status_code == 200 and 'data-done="1"' in fragment.text
    assert undone.status_code == 200 and f'id="item-{first}"' in undone.text
    assert typo.status_code == 400 and 'class="suggestion"' in typo.text
    assert "b.jpg</code>: Discs" in noted.text and ITEM.findall(noted.text) == []  # the note, and no card left
    assert nights.status_code == 200 and "data-run=" in nights.text
    for page in (login, queue, fragment, undone, typo, noted, nights):
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert InlineCode(page.text).blocked == [], page.url
    assert InlineCode(queue.text).scripts == ["/static/review.js"]


GUESS = re.compile(r'name="final" value="([^"]+)" class="guess" data-key="(\d)"')


def test_a_card_offers_the_likeliest_subcategory_first_with_its_classes_before_the_others(settings, review):
    """Where the night recorded the upper-level group the model is surest of (`offered`), the card names it and the
    guesses under it come first (key 1), each part most probable first; a card without one is as before."""
    top3 = [("Boxes", 0.40), ("Discs", 0.31), ("Rings", 0.29)]
    offered = {"level": "sub", "path": ["Shapes", "Round"], "probability": 0.6, "categories": ["Discs", "Rings"]}
    grouped, plain = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", top3, offered), Doubtful("b.jpg", top3)])
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        queue = client.get("/")
        fetch = {"x-review-fetch": "1"}  # the card review.js swaps back in after an undo
        client.post(f"/decide/{grouped}", data={"final": "Discs", "csrf": token}, headers=fetch)
        undone = client.post(f"/undo/{grouped}", data={"csrf": token}, headers=fetch)

    def card(page: str, item: int) -> str:
        return page.split(f'id="item-{item}"')[1].split("</article>")[0]

    for shown in (card(queue.text, grouped), card(undone.text, grouped)):
        assert GUESS.findall(shown) == [("Discs", "1"), ("Rings", "2"), ("Boxes", "3")]
        assert 'most likely <span class="group">Shapes › Round</span>, <span class="p">60%</span>' in shown
    assert GUESS.findall(card(queue.text, plain)) == [("Boxes", "1"), ("Discs", "2"), ("Rings", "3")]
    assert "most likely" not in card(queue.text, plain)
    assert InlineCode(queue.text).blocked == [] and InlineCode(undone.text).blocked == []


def test_a_decision_is_stored_with_the_model_answer_kept_and_the_photo_moved(settings, review):
    first, second = seed_night(
        settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0)), Doubtful("b.jpg", guesses(1))]
    )
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        corrected = client.post(f"/decide/{first}", data={"final": "Rings", "csrf": token, "night": "2026-12-01"})
        assert corrected.status_code == 303 and corrected.headers["location"].startswith("/?night=2026-12-01")
        assert "sorted/Rings/2026-12-01/a.jpg" in client.get(corrected.headers["location"]).text
        rejected = client.post(f"/decide/{second}", data={"unusable": "1", "csrf": token})
        assert rejected.status_code == 303
    rows = {row.id: row for row in Ledger(settings.database_url).results()}
    assert (rows[first].status, rows[first].final_category, rows[first].reviewed_by) == (REVIEWED, "Rings", "alice")
    assert (rows[first].category, rows[first].top3[0]["category"]) == (CLASSES[0], CLASSES[0])  # the model's answer
    assert rows[first].reviewed_at is not None
    assert (rows[second].status, rows[second].final_category) == (UNUSABLE, None)
    assert (rows[first].route_to, rows[second].route_to) == (
        "sorted/Rings/2026-12-01/a.jpg",
        "unusable/2026-12-01/b.jpg",
    )
    assert Ledger(settings.database_url).unrouted() == []  # nothing left for the night's routing retry
    assert keys(settings, "review/") == []
    assert keys(settings, "sorted/") == ["sorted/Rings/2026-12-01/a.jpg"]
    assert keys(settings, "unusable/") == ["unusable/2026-12-01/b.jpg"]


def test_unknown_and_unsafe_class_names_are_refused(settings, tmp_path):
    hostile = "../../etc"
    review = ReviewSettings(
        users_file=str(users_file(tmp_path)), classes=str(classes_file(tmp_path, [*CLASSES, hostile]))
    )
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        unknown = client.post(
            f"/decide/{item}", data={"final": "Toasters", "csrf": token}, headers={"x-review-fetch": "1"}
        )
        assert unknown.status_code == 400 and "is not one of the model&#39;s classes" in unknown.text
        unsafe = client.post(f"/decide/{item}", data={"final": hostile, "csrf": token}, headers={"x-review-fetch": "1"})
        assert unsafe.status_code == 400 and "cannot name a folder" in unsafe.text
    [row] = Ledger(settings.database_url).results()
    assert row.status == NEEDS_REVIEW
    assert keys(settings, "review/") == ["review/2026-12-01/a.jpg"]


def test_without_a_classes_file_the_page_offers_every_class_of_the_served_model_one_without_results_too(
    settings, tmp_path
):
    """The page's classes are those of the model the night was served by (recorded at the run's start), not the
    categories its answers happened to name: a reviewer may sort an item into a class no photo was classified as."""
    store = open_store(settings.store)
    for name in ("a.jpg", "b.jpg"):
        put_object(store, f"inbox/2026-12-01/{name}", encode(product_image("Discs", 0)))
    with fake_torchserve(lambda n, image: (200, prediction("v1", "Discs", 0.3))) as url:  # it serves Boxes, Discs
        nightly(replace(settings, torchserve_url=url, retries=0, concurrency=1))
    assert {row.category for row in Ledger(settings.database_url).results()} == {"Discs"}
    with review_app(settings, ReviewSettings(users_file=str(users_file(tmp_path)))) as app:  # no --classes
        client, token = logged_in(app.url, "alice")
        queue = client.get("/").text
        datalist = queue.split('<datalist id="classes">')[1].split("</datalist>")[0]
        offered = re.findall(r'<option value="([^"]*)">', datalist)
        item = ITEM.search(queue).group(1)
        boxes = client.post(f"/decide/{item}", data={"final": "Boxes", "csrf": token}, headers={"x-review-fetch": "1"})
    assert offered == ["Boxes", "Discs"]
    assert boxes.status_code == 200
    decided = {row.id: row.final_category for row in Ledger(settings.database_url).results()}
    assert decided[int(item)] == "Boxes"


def test_two_reviewers_deciding_at_once_one_wins_the_other_is_told_nothing_moves_twice(settings, review):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(n)) for n in range(6)])
    with review_app(settings, review) as app:
        sessions = {name: logged_in(app.url, name) for name in ("alice", "bob")}
        answers: dict[tuple[str, int], httpx.Response] = {}
        start = threading.Barrier(2)

        def work(name: str, final: str) -> None:
            client, token = sessions[name]
            start.wait()
            for item in items:
                answers[name, item] = client.post(
                    f"/decide/{item}", data={"final": final, "csrf": token}, headers={"x-review-fetch": "1"}
                )

        threads = [threading.Thread(target=work, args=args) for args in (("alice", "Cones"), ("bob", "Rings"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    rows = {row.id: row for row in Ledger(settings.database_url).results()}
    for item in items:
        codes = {name: answers[name, item].status_code for name in ("alice", "bob")}
        assert sorted(codes.values()) == [200, 409], codes
        winner = rows[item].reviewed_by
        loser = "bob" if winner == "alice" else "alice"
        assert codes[winner] == 200
        assert f'Already decided by <b class="first">{winner}</b>' in answers[loser, item].text
    moved = keys(settings, "sorted/")
    assert len(moved) == len(items) and keys(settings, "review/") == []
    assert sorted(key.split("/")[1] for key in moved) == sorted(rows[item].final_category for item in items)


def test_thumbnails_are_made_once_and_kept_in_the_store(settings, review):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))], photo_size=(600, 800))
    with review_app(settings, review) as app:
        client, _ = logged_in(app.url, "alice")
        first = client.get(f"/photo/{item}")
        [thumbnail] = keys(settings, "thumbnails/")
        obstore.delete(open_store(settings.store), "review/2026-12-01/a.jpg")  # the stored one is served now
        again = client.get(f"/photo/{item}")
        assert client.get("/photo/999999").status_code == 404
    assert first.status_code == again.status_code == 200 and first.content == again.content
    assert first.headers["content-type"] == "image/jpeg" and len(first.content) < 30_000
    assert read_object(open_store(settings.store), thumbnail) == first.content


def test_metrics_show_queue_age_decisions_and_agreement(settings, review):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(0)) for n in range(4)])
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        client.post(f"/decide/{items[0]}", data={"final": CLASSES[0], "csrf": token})  # agrees with top-1
        client.post(f"/decide/{items[1]}", data={"final": CLASSES[1], "csrf": token})  # corrects it
        metrics = httpx.get(f"{app.metrics_url}/metrics").text
        assert httpx.get(f"{app.url}/metrics").status_code == 404  # the page's port serves no metrics
    assert "refund_review_queue_size 2.0" in metrics
    age = float(re.search(r"^refund_review_oldest_waiting_seconds (\S+)$", metrics, re.M).group(1))
    assert age > 0
    assert re.search(r'^refund_review_decisions\{day="\d{4}-\d\d-\d\d"\} 2.0$', metrics, re.M)
    assert f'refund_review_agreement_ratio{{category="{CLASSES[0]}"}} 0.5' in metrics
    assert f'refund_review_reviewed_items{{category="{CLASSES[0]}"}} 2.0' in metrics


def test_revision_0002_adds_the_decision_columns_and_keeps_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0001")
        connection.exec_driver_sql(
            "INSERT INTO results (object_key, identity, model_version, size, last_modified, status, category, "
            "attempts, created_at) VALUES ('inbox/a.jpg', 'e1', 'v1', 10, '2026-12-01', 'needs_review', 'Discs', 1, "
            "'2026-12-01')"
        )
    ledger = Ledger(url)
    columns = {column["name"] for column in inspect(ledger.engine).get_columns("results")}
    assert {"final_category", "reviewed_by", "reviewed_at"} <= columns
    [row] = ledger.results()
    assert (row.object_key, row.status, row.category, row.final_category) == (
        "inbox/a.jpg",
        NEEDS_REVIEW,
        "Discs",
        None,
    )


def test_export_labels_writes_the_kaggle_layout_without_unusable_items(settings, review, tmp_path, monkeypatch):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(n)) for n in range(3)])
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        client.post(f"/decide/{items[0]}", data={"final": "Boxes", "csrf": token})
        client.post(f"/decide/{items[1]}", data={"unusable": "1", "csrf": token})
    for name, value in {"STORE": settings.store, "DATABASE_URL": settings.database_url, "ROUTE": "move"}.items():
        monkeypatch.setenv(f"REFUND_{name}", value)
    out = tmp_path / "export"
    assert main(["export-labels", "--out", str(out)]) == 0
    with (out / "styles.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["id"], row["articleType"], row["reviewedBy"]) for row in rows] == [(f"r{items[0]}", "Boxes", "alice")]
    assert (out / "images" / f"r{items[0]}.jpg").read_bytes() == read_object(
        open_store(settings.store), "sorted/Boxes/2026-12-01/0.jpg"
    )
    assert sorted(path.name for path in (out / "images").iterdir()) == [f"r{items[0]}.jpg"]


def test_export_labels_leaves_out_a_photo_bigger_than_max_image_bytes_and_says_why(tmp_path, monkeypatch, capsys):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    [small] = seed_night(settings, utc(2026, 12, 1), [Doubtful("small.jpg", guesses(0))])
    [big] = seed_night(settings, utc(2026, 12, 2), [Doubtful("big.jpg", guesses(1))], photo_size=(600, 800))
    engine = Ledger(settings.database_url).engine
    for item in (small, big):
        decisions.decide(engine, item, "alice", "Boxes")
    limit = len(read_object(open_store(settings.store), "inbox/2026-12-01/small.jpg"))
    for name, value in {"STORE": settings.store, "DATABASE_URL": settings.database_url}.items():
        monkeypatch.setenv(f"REFUND_{name}", value)
    monkeypatch.setenv("REFUND_MAX_IMAGE_BYTES", str(limit))
    out = tmp_path / "export"
    assert main(["export-labels", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert [path.name for path in (out / "images").iterdir()] == [f"r{small}.jpg"]
    assert (
        "left out inbox/2026-12-02/big.jpg: object is " in printed.err
        and f"more than the {limit} allowed" in printed.err
    )
    assert "1 reviewed photos written" in printed.out and "(1 missing)" in printed.out


def test_the_nights_page_shows_the_latest_retrainings_from_the_registry(tmp_path):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    users = str(users_file(tmp_path))
    models = Registry(open_store(str(tmp_path / "registry")))
    for week in range(7):  # what the weekly job records (training/retrain.py), oldest first
        promoted = week != 6
        reason = "beats production" if promoted else "does not beat production 20261201T030000Z on the test split"
        entry = {"at": f"2026-12-{week + 1:02d}T03:40:00+00:00", "reviewed_returns": 10 * week, "reason": reason}
        models.record_retraining(
            {"version": f"2026120{week + 1}T030000Z", "catalogue_images": 44000, "promoted": promoted, **entry}
        )
    with review_app(settings, ReviewSettings(users_file=users, registry=str(tmp_path / "registry"))) as app:
        client, _ = logged_in(app.url, "alice")
        page = client.get("/nights").text
    rows = re.findall(r'<tr class="retraining (\w+)" data-version="(\w+)">', page)
    assert rows == [("refused", "20261207T030000Z"), *(("promoted", f"2026120{day}T030000Z") for day in (6, 5, 4, 3))]
    assert "does not beat production 20261201T030000Z" in page and '<td class="n">60</td>' in page

    (tmp_path / "registry" / "models" / "20261208T030000Z").mkdir()
    (tmp_path / "registry" / "models" / "20261208T030000Z" / "retrain.json").write_text("{not json")
    with review_app(settings, ReviewSettings(users_file=users, registry=str(tmp_path / "registry"))) as app:
        client, _ = logged_in(app.url, "alice")
        broken = client.get("/nights")
    assert broken.status_code == 200 and "The model registry could not be read" in broken.text  # the nights stay
    with review_app(settings, ReviewSettings(users_file=users)) as app:  # no registry configured: no section
        client, _ = logged_in(app.url, "alice")
        assert "Retrainings" not in client.get("/nights").text


def test_review_passwd_prints_a_line_the_app_accepts(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-of-carol\n"))
    assert main(["review-passwd", "carol"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("carol:$argon2id$")
    (tmp_path / "users").write_text(line + "\n")
    reviewers = Reviewers(tmp_path / "users")
    assert reviewers.verify("carol", "pw-of-carol") and not reviewers.verify("carol", "wrong")


def test_the_nightly_report_shows_the_review_desk_and_escapes_what_it_shows(tmp_path):
    settings = Settings(
        store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}", route="move"
    )
    hostile = "<b onclick=x()>Bags</b>"
    items = seed_night(
        settings,
        utc(2026, 12, 1),
        [Doubtful("a&<i>.jpg", [(hostile, 0.4), *guesses(0)[:2]]), Doubtful("b.jpg", guesses(0))],
    )
    ledger = Ledger(settings.database_url)
    decisions.decide(ledger.engine, items[1], "alice", CLASSES[1])  # disagrees with the model's top-1
    rows = ledger.results()
    photos = Photos(open_store(settings.store), settings.inbox_prefix, settings.route, "thumbnails/")
    stats = RunStats(
        rows[0].run_id,
        "0/1",
        ServedModel("refund-classifier", "v1", CLASSES, SortingRule.single(0.5), {}),
        0.5,
        seconds=1.0,
    )
    html = html_report.render(summarize(stats, rows, [], 0.25), rows, photos, review_stats(ledger.engine))
    assert hostile not in html and "&lt;b onclick=x()&gt;Bags&lt;/b&gt;" in html
    assert "a&amp;&lt;i&gt;.jpg" in html and html.count("data:image/jpeg;base64,") == 1  # from review/
    desk = html.split("The review desk")[1].split("Failures")[0]
    assert "<b>1</b>waiting for review" in desk
    assert f'<td>{CLASSES[0]}</td><td class="n">1</td><td class="n">0%</td>' in desk


def test_a_reviewer_added_to_the_users_file_can_log_in_without_a_restart(tmp_path):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    users = tmp_path / "reviewers"
    users.write_text(hash_line("alice", PASSWORDS["alice"]) + "\n")
    with review_app(settings, ReviewSettings(users_file=str(users))) as app, httpx.Client(base_url=app.url) as client:
        assert log_in(client, "bob") == 401
        users.write_text(users.read_text() + hash_line("bob", PASSWORDS["bob"]) + "\n")  # as a Secret update lands
        assert log_in(client, "bob") == 303
        users.write_text("bob has no hash\n")  # a broken update keeps the reviewers read before
        assert log_in(client, "alice") == 303


def test_refund_batch_review_serves_the_page_on_loopback_with_the_nights_settings(tmp_path):
    settings = Settings(
        store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}", runs_prefix="nightly/"
    )
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    [night] = decisions.nights(Ledger(settings.database_url).engine)
    put_object(open_store(settings.store), f"nightly/{night.run_id}/report.html", b"<p>the night</p>")
    port, metrics_port = distinct_free_ports(2)
    env = {
        **os.environ,
        "REFUND_STORE": settings.store,
        "REFUND_DATABASE_URL": settings.database_url,
        "REFUND_RUNS_PREFIX": settings.runs_prefix,  # the night's, so its reports are found
        "REFUND_MAX_IMAGE_BYTES": "1000",
        "REFUND_REVIEW_USERS_FILE": str(users_file(tmp_path)),
        "REFUND_REVIEW_PORT": str(port),
        "REFUND_REVIEW_METRICS_PORT": str(metrics_port),  # not the default 8091, which may be taken
    }
    process = subprocess.Popen([sys.executable, "-m", "batch_job", "review"], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").text == "ok"
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "refund-batch review did not start"
                time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").headers["location"] == "/login"
            assert log_in(client, "alice") == 303 and f'data-item="{item}"' in client.get("/").text
            link = re.search(r'href="(/nights/[^"]+/report)"', client.get("/nights").text).group(1)
            report = client.get(link)
            too_big = client.get(f"/photo/{item}")
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert (report.status_code, report.text) == (200, "<p>the night</p>")
    assert too_big.status_code == 413 and "more than the 1000 allowed" in too_big.text


def test_the_queue_pages_by_key_newest_night_first_and_filters_by_night_and_category(settings, tmp_path):
    review = ReviewSettings(
        users_file=str(users_file(tmp_path)), classes=str(classes_file(tmp_path, CLASSES)), page_size=2
    )
    older = seed_night(settings, utc(2026, 11, 30), [Doubtful(f"o{n}.jpg", guesses(n)) for n in range(2)])
    newer = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"n{n}.jpg", guesses(n)) for n in range(3)])
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        first = client.get("/").text
        second = client.get("/?" + NEXT.search(first).group(1).replace("&amp;", "&")).text
        by_night = client.get("/?night=2026-11-30").text
        by_category = client.get(f"/?category={CLASSES[1]}").text
        assert client.get("/?night=yesterday").status_code == 400
        # Deciding the first page, then "next": the queue shrank, yet no item is skipped.
        for item in ITEM.findall(first):
            client.post(f"/decide/{item}", data={"final": "Discs", "csrf": token})
        after_deciding = client.get("/?" + NEXT.search(first).group(1).replace("&amp;", "&")).text
    shown = [int(item) for item in ITEM.findall(first)], [int(item) for item in ITEM.findall(second)]
    # Newest night first; within a night the least sure first, then by id (all equally sure here).
    assert shown == (sorted(newer)[:2], [sorted(newer)[2], sorted(older)[0]])
    assert [int(item) for item in ITEM.findall(after_deciding)] == [sorted(newer)[2], sorted(older)[0]]
    assert "5 waiting" in first and 'rel="next"' in first and 'rel="first"' in second
    assert sorted(int(item) for item in ITEM.findall(by_night)) == sorted(older)
    assert "2 waiting" in by_night and '<option value="2026-11-30" selected>' in by_night
    assert [int(item) for item in ITEM.findall(by_category)] == [newer[1], older[1]]


def test_an_item_whose_nightly_routing_failed_goes_from_the_inbox_straight_to_its_decided_folder(settings, review):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))], routing_failed=("a.jpg",))
    [row] = Ledger(settings.database_url).unrouted()
    assert row.route_to == "review/2026-12-01/a.jpg" and keys(settings, "review/") == []
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        assert client.get(f"/photo/{item}").status_code == 200  # shown from the inbox
        answer = client.post(f"/decide/{item}", data={"final": "Cones", "csrf": token}, headers={"x-review-fetch": "1"})
    assert answer.status_code == 200 and "moved to <code>sorted/Cones/2026-12-01/a.jpg</code>" in answer.text
    assert keys(settings, "sorted/") == ["sorted/Cones/2026-12-01/a.jpg"]
    assert keys(settings, "inbox/") == [] and keys(settings, "review/") == []
    assert Ledger(settings.database_url).unrouted() == []  # the night will not route it into review/ again


def test_a_failed_move_of_a_decided_photo_is_finished_by_the_nights_routing_retry(tmp_path):
    settings = Settings(
        store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}", route="move"
    )
    review = ReviewSettings(users_file=str(users_file(tmp_path)), classes=str(classes_file(tmp_path, CLASSES)))
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))], routing_failed=("a.jpg",))
    blocker = tmp_path / "store/sorted/Cones/2026-12-01/a.jpg"
    blocker.mkdir(parents=True)  # a folder where the photo should go: the store refuses the copy
    ledger, row = decide_while_the_move_fails(settings, review, item)
    assert (row.status, row.route_to) == (REVIEWED, "sorted/Cones/2026-12-01/a.jpg")
    blocker.rmdir()
    nights_routing_retry(settings, ledger)
    assert keys(settings, "sorted/") == ["sorted/Cones/2026-12-01/a.jpg"] and keys(settings, "inbox/") == []
    assert ledger.unrouted() == [] and keys(settings, "review/") == []


def decide_while_the_move_fails(settings: Settings, review: ReviewSettings, item: int) -> tuple[Ledger, Result]:
    """Decides `item` as Cones through the page while the store refuses the move; the ledger and the due row."""
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        answer = client.post(f"/decide/{item}", data={"final": "Cones", "csrf": token}, headers={"x-review-fetch": "1"})
    assert answer.status_code == 200 and "decided, but the photo could not be moved" in answer.text
    ledger = Ledger(settings.database_url)
    [row] = ledger.unrouted()
    return ledger, row


def nights_routing_retry(settings: Settings, ledger: Ledger) -> None:
    """What a night does after its results: route every result whose move is still due."""
    model = ServedModel("refund-classifier", "v1", CLASSES, SortingRule.single(0.5), {})
    job.route(open_store(settings.store), settings, ledger, RunStats("r", "0/1", model, 0.5), ledger.unrouted())


@pytest.fixture
def folder_settings(database_url, tmp_path) -> Settings:
    """A folder store, where a real failure of one move is easy to set up, on both databases."""
    return Settings(store=str(tmp_path / "store"), database_url=database_url, route="move")


def test_a_failed_move_of_a_decided_photo_out_of_review_leaves_the_decision_and_the_next_night_moves_it(
    folder_settings, review
):
    """The night moved the photo into review/; the decision's move to sorted/ fails (a folder sits where it
    should go): the decision stands, the move is recorded as due, and the next night's routing makes it."""
    settings = folder_settings
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    blocker = Path(settings.store) / "sorted/Cones/2026-12-01/a.jpg"
    blocker.mkdir(parents=True)
    ledger, row = decide_while_the_move_fails(settings, review, item)
    assert (row.status, row.final_category, row.route_to) == (REVIEWED, "Cones", "sorted/Cones/2026-12-01/a.jpg")
    assert keys(settings, "review/") == ["review/2026-12-01/a.jpg"]
    blocker.rmdir()
    nights_routing_retry(settings, ledger)
    assert keys(settings, "sorted/") == ["sorted/Cones/2026-12-01/a.jpg"] and keys(settings, "review/") == []
    assert ledger.unrouted() == [] and keys(settings, "inbox/") == []


def test_a_decision_made_while_the_night_moves_the_photo_into_review_leaves_the_row_where_the_photo_is(
    settings, review
):
    """The night moves the photo into review/, then a reviewer decides, then the night records its move (the
    racy order, step by step): the row must not say sorted/ while the photo sits in review/, and the next
    night's routing takes the photo to the decided folder."""
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))], routing_failed=("a.jpg",))
    ledger = Ledger(settings.database_url)
    [due] = ledger.unrouted()
    route_object(open_store(settings.store), due.object_key, due.route_to, move=True)  # the night's move
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        answer = client.post(f"/decide/{item}", data={"final": "Cones", "csrf": token}, headers={"x-review-fetch": "1"})
    assert answer.status_code == 200 and "decided, but the photo could not be moved" in answer.text
    assert not mark_routed(ledger.engine, due.id, due.object_key, due.route_to)  # the night records its move
    photos = Photos(open_store(settings.store), settings.inbox_prefix, settings.route, "thumbnails")
    assert photos.current_key(decisions.item(ledger.engine, item)) == "review/2026-12-01/a.jpg"
    nights_routing_retry(settings, ledger)
    row = decisions.item(ledger.engine, item)
    assert (row.status, row.route_to, row.routed_at is not None) == (REVIEWED, "sorted/Cones/2026-12-01/a.jpg", True)
    assert keys(settings, "sorted/") == ["sorted/Cones/2026-12-01/a.jpg"] and keys(settings, "review/") == []
    assert keys(settings, "inbox/") == [] and ledger.unrouted() == []


# -- under real use (issue 20) ---------------------------------------------------------------


def test_a_decision_waiting_for_the_database_does_not_stall_health_or_other_pages(tmp_path, review):
    settings = Settings(
        store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}", route="move"
    )
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        locker = sqlite3.connect(tmp_path / "results.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # as a long write elsewhere: the decision waits for SQLite's lock
        decided: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: decided.append(client.post(f"/decide/{item}", data={"final": "Discs", "csrf": token}))
        )
        waiting.start()
        time.sleep(0.5)
        health = []
        for _ in range(5):
            started = time.perf_counter()
            assert httpx.get(f"{app.url}/healthz", timeout=10).text == "ok"
            health.append(time.perf_counter() - started)
        assert decided == []  # still waiting for the lock, on a worker thread, not on the event loop
        locker.execute("ROLLBACK")
        waiting.join(timeout=60)
    assert max(health) < 1.0, health
    assert decided[0].status_code == 303


def test_wrong_passwords_are_throttled_per_name_and_per_address_with_retry_after(tmp_path, caplog):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    review = ReviewSettings(
        users_file=str(users_file(tmp_path)), login_limit_per_name="3/minute", login_limit_per_address="5/minute"
    )
    with review_app(settings, review) as app, httpx.Client(base_url=app.url) as client:
        token = CSRF.search(client.get("/login").text).group(1)

        def attempt(name: str, password: str) -> httpx.Response:
            return client.post("/login", data={"csrf": token, "username": name, "password": password})

        assert [attempt("alice", "guess").status_code for _ in range(3)] == [401, 401, 401]
        throttled = attempt("alice", PASSWORDS["alice"])  # even the right password waits now
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "Too many wrong passwords" in throttled.text
        assert [attempt("bob", "guess").status_code for _ in range(2)] == [401, 401]  # 5 from this address now
        assert attempt("bob", PASSWORDS["bob"]).status_code == 429
        metrics = httpx.get(f"{app.metrics_url}/metrics").text
    assert 'refund_review_logins_throttled_total{by="name"} 1.0' in metrics
    assert 'refund_review_logins_throttled_total{by="address"} 1.0' in metrics
    assert any(record.getMessage() == "login throttled" for record in caplog.records)


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_x_forwarded_for_names_the_throttled_address_only_from_a_trusted_proxy(tmp_path, caplog, trusted):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    review = ReviewSettings(
        users_file=str(users_file(tmp_path)), login_limit_per_address="2/minute", forwarded_allow_ips=trusted
    )
    with review_app(settings, review) as app, httpx.Client(base_url=app.url) as client:
        token = CSRF.search(client.get("/login").text).group(1)
        answers = [  # a new name and a new forwarded address each time: only the address limit can be spent
            client.post(
                "/login",
                data={"csrf": token, "username": f"guesser{n}", "password": "guess"},
                headers={"x-forwarded-for": f"203.0.113.{n}"},
            ).status_code
            for n in range(3)
        ]
    counted = [record.address for record in caplog.records if record.getMessage() == "failed login"]
    if trusted:  # the proxy's word: each client its own limit
        assert (answers, counted) == ([401, 401, 401], ["203.0.113.0", "203.0.113.1", "203.0.113.2"])
    else:  # a forged header changes nothing: the peer's address is counted
        assert (answers, counted) == ([401, 401, 429], ["127.0.0.1", "127.0.0.1"])


def test_logging_out_ends_every_copy_of_the_session_and_a_removed_reviewer_is_out(settings, review):
    first, second = seed_night(
        settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0)), Doubtful("b.jpg", guesses(1))]
    )
    with review_app(settings, review) as app:
        alice, token = logged_in(app.url, "alice")
        copied = httpx.Client(base_url=app.url, cookies=dict(alice.cookies))  # the cookie, copied before logout
        assert copied.get("/").status_code == 200
        assert alice.post("/logout", data={"csrf": token}).status_code == 303
        assert copied.get("/").status_code == 303
        assert copied.post(f"/decide/{first}", data={"final": "Discs", "csrf": token}).status_code == 303
        bob, bobs_token = logged_in(app.url, "bob")
        users = review.users_file
        Path(users).write_text(hash_line("alice", PASSWORDS["alice"]) + "\n")  # bob leaves the team
        assert bob.post(f"/decide/{second}", data={"final": "Discs", "csrf": bobs_token}).status_code == 303
        assert bob.get("/").headers["location"] == "/login"
    assert [row.status for row in Ledger(settings.database_url).results()] == [NEEDS_REVIEW, NEEDS_REVIEW]


def test_header_mode_trusts_the_user_header_only_with_the_proxys_secret(tmp_path):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    with pytest.raises(ValueError, match="proxy-secret"):
        build(settings, ReviewSettings(user_header="X-Forwarded-User"))
    review = ReviewSettings(user_header="X-Forwarded-User", proxy_secret="s3cret-of-the-proxy")
    with review_app(settings, review) as app:
        forged = httpx.get(f"{app.url}/", headers={"x-forwarded-user": "mallory"})
        wrong = httpx.get(f"{app.url}/", headers={"x-forwarded-user": "mallory", "x-review-proxy-secret": "guess"})
        proxied = httpx.get(
            f"{app.url}/", headers={"x-forwarded-user": "carol", "x-review-proxy-secret": "s3cret-of-the-proxy"}
        )
    assert (forged.status_code, wrong.status_code) == (403, 403)
    assert proxied.status_code == 200 and "carol" in proxied.text


def test_photos_and_decisions_only_for_items_in_review_and_no_photo_bigger_than_allowed(settings, review, tmp_path):
    first, second = seed_night(
        settings,
        utc(2026, 12, 1),
        [Doubtful("a.jpg", guesses(0)), Doubtful("b.jpg", guesses(1))],
        photo_size=(600, 800),
    )
    engine = Ledger(settings.database_url).engine
    with engine.begin() as connection:  # the model was sure of b.jpg after all: sorted, never in review
        connection.execute(text("UPDATE results SET status = 'ok' WHERE id = :id"), {"id": second})
    small = replace(settings, max_image_bytes=1000)
    with review_app(settings, review) as app, review_app(small, review) as strict:
        client, token = logged_in(app.url, "alice")
        assert client.get(f"/photo/{second}").status_code == 404
        assert client.get(f"/photo/{second}/whole").status_code == 404
        fetch = {"x-review-fetch": "1"}  # as review.js posts: the answer's status, not a redirect
        not_in_review = client.post(f"/decide/{second}", data={"final": "Discs", "csrf": token}, headers=fetch)
        missing = client.post("/decide/987654", data={"final": "Discs", "csrf": token}, headers=fetch)
        strict_client, _ = logged_in(strict.url, "alice")
        too_big = strict_client.get(f"/photo/{first}")
    assert not_in_review.status_code == 409 and "b.jpg is not in review" in not_in_review.text
    assert missing.status_code == 404 and "no such item" in missing.text
    assert too_big.status_code == 413 and "more than the 1000 allowed" in too_big.text
    assert keys(settings, "thumbnails/") == []
    rows = {row.id: row for row in Ledger(settings.database_url).results()}
    assert rows[second].status == "ok" and rows[second].reviewed_by is None


def test_numbers_a_request_carries_are_bounded_never_a_500(settings, review):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    huge = "99999999999999999999"
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        answers = {
            "after": client.get(f"/?after={huge}").status_code,
            "after, too many digits for int()": client.get(f"/?after={'9' * 5000}").status_code,
            "after, a digit int() refuses": client.get("/?after=%C2%B2").status_code,  # ²
            "page": client.get(f"/?page={huge}").status_code,  # the old offset parameter is ignored
            "photo": client.get(f"/photo/{huge}").status_code,
            "whole": client.get(f"/photo/{huge}/whole").status_code,
            "decide": client.post(f"/decide/{huge}", data={"final": "Discs", "csrf": token}).status_code,
            "undo": client.post(f"/undo/{huge}", data={"csrf": token}).status_code,
            "waiting": client.get(f"/waiting?after=-{huge}").status_code,
        }
    assert answers == {
        "after": 400,
        "after, too many digits for int()": 400,
        "after, a digit int() refuses": 400,
        "page": 200,
        "photo": 404,
        "whole": 404,
        "decide": 404,
        "undo": 404,
        "waiting": 400,
    }
    assert Ledger(settings.database_url).results()[0].id == item


def test_the_json_log_carries_the_traceback_of_log_exception():
    record = logging.LogRecord("refund-review", logging.ERROR, __file__, 1, "could not move a decided photo", (), None)
    try:
        raise PermissionError("the store refused the copy")
    except PermissionError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "could not move a decided photo"
    assert "Traceback" in entry["exception"] and "PermissionError: the store refused the copy" in entry["exception"]


def test_a_missing_users_file_keeps_the_reviewers_read_before_and_says_so(tmp_path, caplog):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    users = users_file(tmp_path)
    with review_app(settings, ReviewSettings(users_file=str(users))) as app, httpx.Client(base_url=app.url) as client:
        users.unlink()  # a Secret unmounted, a file moved away
        assert log_in(client, "alice") == 303
        assert client.get("/").status_code == 200
    errors = [record for record in caplog.records if "users file unreadable" in record.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_a_broken_users_file_is_logged_once_per_change_and_keeps_the_reviewers_read_before(tmp_path, caplog):
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}")
    users = users_file(tmp_path)
    with review_app(settings, ReviewSettings(users_file=str(users))) as app, httpx.Client(base_url=app.url) as client:
        users.write_text("bob has no hash\n")  # a Secret updated with a broken line
        assert [log_in(client, "alice") for _ in range(3)] == [303, 303, 303]
        broken = [record for record in caplog.records if "users file unreadable" in record.getMessage()]
        users.write_text("still no hash\n")  # broken anew: said again
        assert log_in(client, "bob") == 303
    errors = [record for record in caplog.records if "users file unreadable" in record.getMessage()]
    assert len(broken) == 1 and "expected name:$argon2id$" in str(broken[0].exc_info[1])
    assert len(errors) == 2


def test_a_typed_class_matches_whatever_its_case_and_a_typo_gets_suggestions(settings, review):
    first, second = seed_night(
        settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0)), Doubtful("b.jpg", guesses(1))]
    )
    fetch = {"x-review-fetch": "1"}
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        typo = client.post(f"/decide/{first}", data={"final": "ringz", "csrf": token}, headers=fetch)
        lower = client.post(f"/decide/{second}", data={"final": "rings", "csrf": token}, headers=fetch)
    assert typo.status_code == 400 and 'data-refused="1"' in typo.text
    assert 'name="final" value="Rings" class="suggestion"' in typo.text and f'action="/decide/{first}"' in typo.text
    assert lower.status_code == 200
    rows = {row.id: row for row in Ledger(settings.database_url).results()}
    assert (rows[first].status, rows[second].final_category) == (NEEDS_REVIEW, "Rings")


def test_review_passwd_refuses_an_empty_password_and_a_name_with_a_colon(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["review-passwd", "carol"]) == 2
    assert "the password is empty" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["review-passwd", "ca:rol"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "without ':'" in out.err and "Traceback" not in out.err
    with pytest.raises(SystemExit):
        main(["review-passwd", "--help"])
    usage = capsys.readouterr().out
    assert "name" in usage and "--store" not in usage and "--database-url" not in usage


def test_a_reviewer_undoes_their_own_decision_once_and_the_photo_goes_back(settings, review):
    first, second = seed_night(
        settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0)), Doubtful("b.jpg", guesses(1))]
    )
    fetch = {"x-review-fetch": "1"}
    with review_app(settings, review) as app:
        alice, token = logged_in(app.url, "alice")
        bob, bobs_token = logged_in(app.url, "bob")
        decided = alice.post(f"/decide/{first}", data={"final": "Rings", "csrf": token}, headers=fetch)
        assert f'action="/undo/{first}"' in decided.text
        assert bob.post(f"/undo/{first}", data={"csrf": bobs_token}, headers=fetch).status_code == 409  # not his
        undone = alice.post(f"/undo/{first}", data={"csrf": token}, headers=fetch)
        again = alice.post(f"/undo/{first}", data={"csrf": token}, headers=fetch)
        alice.post(f"/decide/{second}", data={"final": "Cones", "csrf": token})
        Ledger(settings.database_url).start_run("20991231T000000000000Z-s0", "0/1", "v1")  # a night ran since
        late = alice.post(f"/undo/{second}", data={"csrf": token}, headers=fetch)
    assert undone.status_code == 200 and f'id="item-{first}"' in undone.text  # the card, to decide anew
    assert again.status_code == 409 and late.status_code == 409
    rows = {row.id: row for row in Ledger(settings.database_url).results()}
    assert (rows[first].status, rows[first].final_category, rows[first].reviewed_by) == (NEEDS_REVIEW, None, None)
    assert rows[first].route_to == "review/2026-12-01/a.jpg" and rows[second].status == REVIEWED
    assert keys(settings, "review/") == ["review/2026-12-01/a.jpg"]
    assert keys(settings, "sorted/") == ["sorted/Cones/2026-12-01/b.jpg"]


def test_an_undo_while_the_decisions_own_move_is_unfinished_is_refused_and_works_once_it_is_done(settings, review):
    """The app commits a decision, then moves its photo and records that (`mark_routed`): an undo in between
    is refused, so the row and the photo never part; once the move is recorded the undo puts the photo back."""
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    ledger = Ledger(settings.database_url)
    photos = Photos(open_store(settings.store), settings.inbox_prefix, settings.route, "thumbnails")
    before = decisions.item(ledger.engine, item)
    destination = photos.decision_route(before, "Rings")
    decided = decisions.decide(ledger.engine, item, "alice", "Rings", destination, photos.current_key(before))
    assert decided.won  # committed, not moved yet
    fetch = {"x-review-fetch": "1"}
    with review_app(settings, review) as app:
        alice, token = logged_in(app.url, "alice")
        early = alice.post(f"/undo/{item}", data={"csrf": token}, headers=fetch)
        row = decisions.item(ledger.engine, item)
        assert early.status_code == 409
        assert (row.status, row.final_category, row.route_to) == (REVIEWED, "Rings", destination)  # a move due
        assert (row.routed_at, photos.current_key(row)) == (None, "review/2026-12-01/a.jpg")
        assert keys(settings, "review/") == ["review/2026-12-01/a.jpg"] and keys(settings, "sorted/") == []
        source = photos.route_decision(decided.row, destination)  # the decision's move, as the app makes it
        assert mark_routed(ledger.engine, item, source, destination)
        undone = alice.post(f"/undo/{item}", data={"csrf": token}, headers=fetch)
    assert undone.status_code == 200
    row = decisions.item(ledger.engine, item)
    assert (row.status, row.reviewed_by, row.route_to) == (NEEDS_REVIEW, None, "review/2026-12-01/a.jpg")
    assert keys(settings, "review/") == ["review/2026-12-01/a.jpg"] and keys(settings, "sorted/") == []


def test_an_exported_decision_cannot_be_undone_one_left_out_of_the_export_can(settings, review, tmp_path, monkeypatch):
    exported, unusable = seed_night(
        settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0)), Doubtful("b.jpg", guesses(1))]
    )
    for name, value in {"STORE": settings.store, "DATABASE_URL": settings.database_url, "ROUTE": "move"}.items():
        monkeypatch.setenv(f"REFUND_{name}", value)
    fetch = {"x-review-fetch": "1"}
    with review_app(settings, review) as app:
        alice, token = logged_in(app.url, "alice")
        alice.post(f"/decide/{exported}", data={"final": "Boxes", "csrf": token})
        alice.post(f"/decide/{unusable}", data={"unusable": "1", "csrf": token})
        assert main(["export-labels", "--out", str(tmp_path / "export")]) == 0
        refused = alice.post(f"/undo/{exported}", data={"csrf": token}, headers=fetch)
        undone = alice.post(f"/undo/{unusable}", data={"csrf": token}, headers=fetch)  # unusable: never exported
    assert refused.status_code == 409 and undone.status_code == 200
    rows = {row.id: row for row in Ledger(settings.database_url).results()}
    assert (rows[exported].status, rows[exported].final_category) == (REVIEWED, "Boxes")
    assert rows[exported].exported_at is not None and rows[unusable].exported_at is None
    assert keys(settings, "sorted/") == ["sorted/Boxes/2026-12-01/a.jpg"]
    assert keys(settings, "review/") == ["review/2026-12-01/b.jpg"]


def test_an_item_whose_photo_the_export_could_not_read_is_not_stamped_exported(settings, review, tmp_path, monkeypatch):
    [item] = seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    ledger = Ledger(settings.database_url)
    assert decisions.decide(ledger.engine, item, "alice", "Boxes").won  # no move: the photo stays in review/
    obstore.delete(open_store(settings.store), "review/2026-12-01/a.jpg")
    for name, value in {"STORE": settings.store, "DATABASE_URL": settings.database_url, "ROUTE": "move"}.items():
        monkeypatch.setenv(f"REFUND_{name}", value)
    assert main(["export-labels", "--out", str(tmp_path / "export")]) == 0
    assert decisions.item(ledger.engine, item).exported_at is None


def test_the_nights_page_lists_nights_and_serves_each_report_through_the_app(settings, review):
    items = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"{n}.jpg", guesses(n)) for n in range(2)])
    ledger = Ledger(settings.database_url)
    [night] = decisions.nights(ledger.engine)
    summary = {
        "statuses": {"ok": 7, "needs_review": 2, "failed": 1},
        "failure_rate": 0.1,
        "drift": {"warnings": ["mix <b>moved</b>"]},
    }
    with ledger.engine.begin() as connection:
        connection.execute(text("UPDATE runs SET summary = :s"), {"s": json.dumps(summary)})
    put_object(
        open_store(settings.store), f"runs/{night.run_id}/report.html", b"<html><style>p{}</style><p>the night</p>"
    )
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        client.post(f"/decide/{items[0]}", data={"final": "Discs", "csrf": token})
        page = client.get("/nights")
        report = client.get(f"/nights/{night.run_id}/report")
        assert client.get("/nights/20200101T000000Z-s0/report").status_code == 404
        assert client.get("/nights/..%2f..%2fetc/report").status_code == 404
        assert httpx.get(f"{app.url}/nights/{night.run_id}/report").status_code == 303  # reviewers only
    row = page.text.split(f'data-run="{night.run_id}"')[1].split("</tr>")[0]
    assert re.findall(r'<td class="n">([^<]*)</td>', row) == ["10", "7", "2", "1", "10.0%"]
    assert "mix &lt;b&gt;moved&lt;/b&gt;" in row and f'href="/nights/{night.run_id}/report"' in row
    assert re.search(r"<td>alice</td><td class=\"n\">1</td>", page.text)
    assert "<title>Nights · returns review</title>" in page.text and page.text.count('id="today"') == 1
    assert report.text.endswith("<p>the night</p>") and "sandbox" in report.headers["content-security-policy"]
    assert "script-src" not in report.headers["content-security-policy"]


def test_review_passwd_on_a_terminal_asks_twice_and_refuses_two_different_passwords():
    def on_a_terminal(*answers: str) -> tuple[int, str]:
        child, terminal = pty.fork()  # the child's controlling terminal is `terminal`, as at a shell
        if child == 0:
            os.execv(sys.executable, [sys.executable, "-m", "batch_job", "review-passwd", "carol"])
        said = b""
        for answer in answers:
            while not said.rstrip().endswith(b":"):  # the prompt
                assert select.select([terminal], [], [], 20)[0], f"no prompt for {answer!r}, only {said!r}"
                said += os.read(terminal, 1024)
            os.write(terminal, answer.encode() + b"\n")
            said = b""
        output = b""
        with contextlib.suppress(OSError):  # EIO once the child has exited
            while chunk := os.read(terminal, 1024):
                output += chunk
        return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), output.decode()

    status, output = on_a_terminal("pw-of-carol", "pw-of-caro")
    assert status == 2 and "the two passwords differ" in output and "$argon2" not in output
    status, output = on_a_terminal("pw-of-carol", "pw-of-carol")
    assert status == 0 and "carol:$argon2id$" in output
