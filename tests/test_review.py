"""The review app over real HTTP (uvicorn on loopback): access, CSRF, decisions and their race,
routing in the store, thumbnails, metrics, the schema revision, and export-labels.

Decisions run on both backends: SQLite + a folder, and PostgreSQL 15 + an S3 server."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import obstore
import pytest
from alembic import command
from batch_job import html_report, job, migrate
from batch_job.__main__ import main
from batch_job.client import ServedModel
from batch_job.job import RunStats
from batch_job.ledger import NEEDS_REVIEW, REVIEWED, UNUSABLE, Ledger
from batch_job.review import decisions
from batch_job.review.auth import Reviewers, hash_line
from batch_job.review.decisions import review_stats
from batch_job.review.photos import Photos
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings
from batch_job.summary import summarize
from sqlalchemy import create_engine, inspect

from common.objectstore import list_objects, open_store, read_object
from tests.ports import free_port
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

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ITEM = re.compile(r'data-item="(\d+)"')


@pytest.fixture(params=["sqlite+folder", "postgresql+s3"])
def settings(request, tmp_path) -> Settings:
    if request.param == "sqlite+folder":
        return Settings(
            store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'results.db'}", route="move"
        )
    store, database_url = request.getfixturevalue("s3_env").url(), request.getfixturevalue("postgres_url")
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


def test_pages_carry_a_strict_content_security_policy(settings, review):
    seed_night(settings, utc(2026, 12, 1), [Doubtful("a.jpg", guesses(0))])
    with review_app(settings, review) as app:
        client, _ = logged_in(app.url, "alice")
        page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in page.text and " on" not in re.sub(r"<[^>]*>", "", page.text)[:0]  # no inline code
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/review.js" defer>']


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
        metrics = httpx.get(f"{app.url}/metrics").text
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
    stats = RunStats(rows[0].run_id, "0/1", ServedModel("refund-classifier", "v1", CLASSES, 0.5, {}), 0.5, seconds=1.0)
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


def test_refund_batch_review_serves_the_page_on_loopback(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "REFUND_STORE": str(tmp_path / "store"),
        "REFUND_DATABASE_URL": f"sqlite:///{tmp_path / 'results.db'}",
        "REFUND_REVIEW_USERS_FILE": str(users_file(tmp_path)),
        "REFUND_REVIEW_PORT": str(port),
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
            assert log_in(client, "alice") == 303 and "Nothing waits for review" in client.get("/").text
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_queue_pages_newest_night_first_and_filters_by_night_and_category(settings, tmp_path):
    review = ReviewSettings(
        users_file=str(users_file(tmp_path)), classes=str(classes_file(tmp_path, CLASSES)), page_size=2
    )
    older = seed_night(settings, utc(2026, 11, 30), [Doubtful(f"o{n}.jpg", guesses(n)) for n in range(2)])
    newer = seed_night(settings, utc(2026, 12, 1), [Doubtful(f"n{n}.jpg", guesses(n)) for n in range(3)])
    with review_app(settings, review) as app:
        client, _ = logged_in(app.url, "alice")
        pages = [client.get(f"/?page={page}").text for page in (1, 2, 3)]
        by_night = client.get("/?night=2026-11-30").text
        by_category = client.get(f"/?category={CLASSES[1]}").text
        assert client.get("/?night=yesterday").status_code == 400
    shown = [[int(item) for item in ITEM.findall(page)] for page in pages]
    # Newest night first; within a night the least sure first, then by id (all equally sure here).
    assert shown == [sorted(newer)[:2], [sorted(newer)[2], sorted(older)[0]], [sorted(older)[1]]]
    assert "page 1 of 3" in pages[0] and 'rel="next"' in pages[0] and 'rel="next"' not in pages[2]
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
    with review_app(settings, review) as app:
        client, token = logged_in(app.url, "alice")
        answer = client.post(f"/decide/{item}", data={"final": "Cones", "csrf": token}, headers={"x-review-fetch": "1"})
    assert answer.status_code == 200 and "decided, but the photo could not be moved" in answer.text
    ledger = Ledger(settings.database_url)
    [row] = ledger.unrouted()
    assert (row.status, row.route_to) == (REVIEWED, "sorted/Cones/2026-12-01/a.jpg")
    blocker.rmdir()
    model = ServedModel("refund-classifier", "v1", CLASSES, 0.5, {})
    job.route(open_store(settings.store), settings, ledger, RunStats("r", "0/1", model, 0.5), ledger.unrouted())
    assert keys(settings, "sorted/") == ["sorted/Cones/2026-12-01/a.jpg"] and keys(settings, "inbox/") == []
    assert ledger.unrouted() == [] and keys(settings, "review/") == []
